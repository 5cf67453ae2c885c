package cloud

import (
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

// TagKey names a tag to delete; with a Value, only a tag with that value is deleted.
type TagKey struct {
	Key   string
	Value *string
}

// ec2Resource locates the record an EC2 resource ID lives in, by its prefix.
func ec2Bucket(id string) (bucket string, ok bool) {
	prefix, _, _ := strings.Cut(id, "-")
	switch prefix {
	case "sg":
		return bucketSecurityGroups, true
	case "vpc":
		return bucketVPCs, true
	case "subnet":
		return bucketSubnets, true
	case "i":
		return bucketInstances, true
	case "eni":
		return bucketInterfaces, true
	case "pl":
		return bucketPrefixLists, true
	case "sgr":
		return bucketSecurityGroups, true
	}
	return "", false
}

// CreateTags adds or overwrites tags on EC2 resources (groups, rules, VPCs, subnets, instances,
// interfaces, prefix lists). All resources must exist, or nothing changes.
func (c *Cloud) CreateTags(ids []string, tags []Tag) error {
	if len(ids) == 0 {
		return errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	if len(tags) == 0 {
		return errorf("MissingParameter", "The request must contain the parameter tagSet")
	}
	if err := validateEC2Tags(tags); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		for _, id := range ids {
			if err := c.editTags(tx, id, func(t Tags) (Tags, error) { return c.mergeTags(t, tags) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteTags removes tags from EC2 resources; with no keys it removes every tag.
func (c *Cloud) DeleteTags(ids []string, keys []TagKey) error {
	if len(ids) == 0 {
		return errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	return c.store.Update(func(tx store.Tx) error {
		for _, id := range ids {
			err := c.editTags(tx, id, func(t Tags) (Tags, error) {
				if len(keys) == 0 {
					return Tags{}, nil
				}
				out := Tags{}
				for k, v := range t {
					out[k] = v
				}
				for _, k := range keys {
					if v, ok := out[k.Key]; ok && (k.Value == nil || *k.Value == v) {
						delete(out, k.Key)
					}
				}
				return out, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// editTags applies edit to the tags of the resource id inside tx.
func (c *Cloud) editTags(tx store.Tx, id string, edit func(Tags) (Tags, error)) error {
	bucket, ok := ec2Bucket(id)
	if !ok {
		return errorf("InvalidID", "The ID '%s' is not valid", id)
	}
	notFound := errorf("InvalidID", "The ID '%s' does not exist", id)
	if strings.HasPrefix(id, "sgr-") {
		groups, err := c.groupIndex(tx)
		if err != nil {
			return err
		}
		if owner, ok := groups.ruleOwner.get(id); ok {
			sg, err := loadGroup(tx, owner) // its own copy, to change
			if err != nil {
				return err
			}
			hasRule := func(r Rule) bool { return r.ID == id }
			for _, rules := range [][]Rule{sg.Ingress, sg.Egress} {
				if i := slices.IndexFunc(rules, hasRule); i >= 0 {
					t, err := edit(rules[i].Tags)
					if err != nil {
						return err
					}
					rules[i].Tags = t
				}
			}
			return store.Save(tx, bucketSecurityGroups, sg.ID, sg)
		}
		return errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
	}
	switch bucket {
	case bucketSecurityGroups:
		return editRecordTags(tx, bucket, id, func(r *SecurityGroup) *Tags { return &r.Tags }, edit, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id))
	case bucketVPCs:
		return editRecordTags(tx, bucket, id, func(r *VPC) *Tags { return &r.Tags }, edit, notFound)
	case bucketSubnets:
		return editRecordTags(tx, bucket, id, func(r *Subnet) *Tags { return &r.Tags }, edit, notFound)
	case bucketInstances:
		return editRecordTags(tx, bucket, id, func(r *Instance) *Tags { return &r.Tags }, edit, notFound)
	case bucketInterfaces:
		return editRecordTags(tx, bucket, id, func(r *NetworkInterface) *Tags { return &r.Tags }, edit, notFound)
	default:
		return editRecordTags(tx, bucket, id, func(r *PrefixList) *Tags { return &r.Tags }, edit, notFound)
	}
}

func editRecordTags[T any](tx store.Tx, bucket, id string, tags func(*T) *Tags, edit func(Tags) (Tags, error), notFound *Error) error {
	rec, err := store.Load[T](tx, bucket, id)
	if err == store.ErrNotFound {
		return notFound
	} else if err != nil {
		return err
	}
	t, err := edit(*tags(&rec))
	if err != nil {
		return err
	}
	*tags(&rec) = t
	return store.Save(tx, bucket, id, rec)
}
