package cloud

import (
	"time"

	"github.com/moatlb/moat/internal/store"
)

// CapacityReservation is a load balancer's reserved minimum capacity (ELBv2
// Describe/ModifyCapacityReservation). moat's data plane has no capacity units to provision,
// so a reservation is recorded and reported as provisioned in every zone at once.
type CapacityReservation struct {
	CapacityUnits int // 0: none
	LastModified  time.Time
	Zones         []string
	// DecreaseRequestsRemaining is AWS's daily allowance of decreases; moat does not limit them.
	DecreaseRequestsRemaining int
}

// DescribeCapacityReservation reports a load balancer's reservation.
func (c *Cloud) DescribeCapacityReservation(arn string) (CapacityReservation, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return CapacityReservation{}, err
	}
	var lb LoadBalancer
	err := c.store.View(func(tx store.Tx) (err error) {
		lb, err = peekLB(tx, arn)
		return err
	})
	return capacityOf(lb), err
}

// ModifyCapacityReservation sets (units > 0) or resets the minimum capacity.
func (c *Cloud) ModifyCapacityReservation(arn string, units *int, reset bool) (CapacityReservation, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return CapacityReservation{}, err
	}
	switch {
	case units != nil && reset:
		return CapacityReservation{}, errorf("ValidationError", "You cannot specify both MinimumLoadBalancerCapacity and ResetCapacityReservation")
	case units == nil && !reset:
		return CapacityReservation{}, errorf("ValidationError", "You must specify either MinimumLoadBalancerCapacity or ResetCapacityReservation")
	case units != nil && *units < 1:
		return CapacityReservation{}, errorf("ValidationError", "1 validation error detected: Value '%d' at 'minimumLoadBalancerCapacity.capacityUnits' failed to satisfy constraint: Member must have value greater than or equal to 1", *units)
	}
	var lb LoadBalancer
	err := c.store.Update(func(tx store.Tx) (err error) {
		if lb, err = loadLB(tx, arn); err != nil {
			return err
		}
		lb.CapacityUnits = 0
		if units != nil {
			lb.CapacityUnits = *units
		}
		lb.CapacityModified = c.cfg.Now().UTC()
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	return capacityOf(lb), err
}

func capacityOf(lb LoadBalancer) CapacityReservation {
	r := CapacityReservation{CapacityUnits: lb.CapacityUnits, LastModified: lb.CapacityModified, DecreaseRequestsRemaining: 4}
	for _, z := range lb.Zones {
		r.Zones = append(r.Zones, z.Zone)
	}
	return r
}
