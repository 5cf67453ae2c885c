package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/model"
)

// TargetGroupBindingFinalizer is the AWS controller's finalizer on TargetGroupBindings: their
// targets are deregistered and their rules revoked before they go.
const TargetGroupBindingFinalizer = "elbv2.k8s.aws/resources"

// stackOf returns the Service ("<namespace>/<name>") whose stack a TargetGroupBinding belongs to,
// from the AWS controller's stack labels; "" for a binding made by hand.
func stackOf(tgb *elbv2api.TargetGroupBinding) string {
	ns, okNS := tgb.Labels[model.LabelStackNamespace]
	name, okName := tgb.Labels[model.LabelStackName]
	if !okNS || !okName {
		return ""
	}
	return ns + "/" + name
}

func hasNetworking(n *elbv2api.TargetGroupBindingNetworking) bool {
	return n != nil && len(n.Ingress) > 0
}

// bindingRegistry answers deploy.Options.Bindings: the keys of every TargetGroupBinding with
// networking whose Service is not going away. For the stacks this process has deployed or is
// cleaning up, what it deployed is authoritative (the cache may lag behind the objects it just
// wrote); for the others, and for bindings made by hand, the cached objects are.
type bindingRegistry struct {
	client client.Reader
	cfg    model.Config

	mu     sync.Mutex
	stacks map[string][]string // stack ID → keys of its bindings with networking
}

func newBindingRegistry(c client.Reader, cfg model.Config) *bindingRegistry {
	return &bindingRegistry{client: c, cfg: cfg, stacks: map[string][]string{}}
}

// set records the bindings with networking of a stack about to be deployed (empty for a stack
// being deleted).
func (r *bindingRegistry) set(stackID string, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stacks[stackID] = slices.Clone(keys)
}

// keys lists the binding keys, for deploy.Options.Bindings.
func (r *bindingRegistry) keys(ctx context.Context) ([]string, error) {
	// Read-only use of the cache's own objects: copying every binding (and Service) on each
	// reconcile made a resync of 1,000 Services quadratic.
	var list elbv2api.TargetGroupBindingList
	if err := r.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list target group bindings: %w", err)
	}
	r.mu.Lock()
	known := maps.Clone(r.stacks)
	r.mu.Unlock()

	out := map[string]bool{}
	for _, ks := range known {
		for _, k := range ks {
			out[k] = true
		}
	}
	for i := range list.Items {
		tgb := &list.Items[i]
		if !hasNetworking(tgb.Spec.Networking) || tgb.DeletionTimestamp != nil {
			continue
		}
		stack := stackOf(tgb)
		if _, ok := known[stack]; ok {
			continue
		}
		svc := &corev1.Service{}
		err := r.client.Get(ctx, types.NamespacedName{Namespace: tgb.Namespace, Name: tgb.Spec.ServiceRef.Name}, svc, client.UnsafeDisableDeepCopy)
		switch {
		case apierrors.IsNotFound(err):
			if stack != "" {
				continue // the Service's stack is gone
			}
		case err != nil:
			return nil, fmt.Errorf("get service of target group binding %s/%s: %w", tgb.Namespace, tgb.Name, err)
		case svc.DeletionTimestamp != nil:
			continue
		case stack != "" && !model.Selected(svc, r.cfg):
			continue
		}
		out[tgb.Namespace+"/"+tgb.Name] = true
	}
	return slices.Sorted(maps.Keys(out)), nil
}

// toAPINetworking converts a stack binding's networking (every token resolved) to the API's.
func toAPINetworking(n *model.Networking, resolve func(model.Token) string) *elbv2api.TargetGroupBindingNetworking {
	if n == nil {
		return nil
	}
	out := &elbv2api.TargetGroupBindingNetworking{}
	for _, in := range n.Ingress {
		rule := elbv2api.NetworkingIngressRule{From: []elbv2api.NetworkingPeer{}, Ports: []elbv2api.NetworkingPort{}}
		for _, p := range in.From {
			switch {
			case p.SecurityGroup != nil:
				rule.From = append(rule.From, elbv2api.NetworkingPeer{SecurityGroup: &elbv2api.SecurityGroup{GroupID: resolve(p.SecurityGroup.GroupID)}})
			case p.IPBlock != nil:
				rule.From = append(rule.From, elbv2api.NetworkingPeer{IPBlock: &elbv2api.IPBlock{CIDR: p.IPBlock.CIDR}})
			}
		}
		for _, p := range in.Ports {
			proto := elbv2api.NetworkingProtocol(p.Protocol)
			np := elbv2api.NetworkingPort{Protocol: &proto}
			if p.Port != nil {
				port := *p.Port
				np.Port = &port
			}
			rule.Ports = append(rule.Ports, np)
		}
		out.Ingress = append(out.Ingress, rule)
	}
	return out
}

// toModelNetworking converts a binding's networking to the deploy stage's: a port without
// protocol is TCP, and a rule without ports opens every TCP port, as the AWS controller reads
// them.
func toModelNetworking(n *elbv2api.TargetGroupBindingNetworking) *model.Networking {
	if !hasNetworking(n) {
		return nil
	}
	out := &model.Networking{}
	for _, in := range n.Ingress {
		rule := model.NetworkingIngressRule{}
		for _, p := range in.From {
			switch {
			case p.SecurityGroup != nil:
				rule.From = append(rule.From, model.NetworkingPeer{SecurityGroup: &model.PeerSecurityGroup{GroupID: model.Literal(p.SecurityGroup.GroupID)}})
			case p.IPBlock != nil:
				rule.From = append(rule.From, model.NetworkingPeer{IPBlock: &model.IPBlock{CIDR: p.IPBlock.CIDR}})
			}
		}
		for _, p := range in.Ports {
			proto := string(elbv2api.NetworkingProtocolTCP)
			if p.Protocol != nil {
				proto = string(*p.Protocol)
			}
			var port *intstr.IntOrString
			if p.Port != nil {
				v := *p.Port
				port = &v
			}
			rule.Ports = append(rule.Ports, model.NetworkingPort{Protocol: proto, Port: port})
		}
		if len(rule.Ports) == 0 {
			rule.Ports = []model.NetworkingPort{{Protocol: string(elbv2api.NetworkingProtocolTCP)}}
		}
		out.Ingress = append(out.Ingress, rule)
	}
	return out
}
