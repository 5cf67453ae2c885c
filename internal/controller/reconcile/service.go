package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// serviceControllerName names the Service controller (its metrics, logs and Events).
const serviceControllerName = "service"

// ServiceReconciler reconciles the Services the controller owns into load balancer stacks.
type ServiceReconciler struct {
	client   client.Client
	cfg      model.Config
	deployer *deploy.Deployer
	targets  *targetResolver
	registry *bindingRegistry
	events   *eventSink
}

// Reconcile makes AWS match one Service: its stack while model.Selected picks it, nothing once
// it is deleted or no longer selected.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	svc := &corev1.Service{}
	if err := r.client.Get(ctx, req.NamespacedName, svc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !model.Selected(svc, r.cfg) {
		if !controllerutil.ContainsFinalizer(svc, model.ServiceFinalizer) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, r.cleanup(ctx, svc)
	}
	return reconcile.Result{}, r.reconcile(ctx, svc)
}

// permanent reports whether a build error is the Service's own fault, so that retrying without a
// change to the Service cannot help.
func permanent(err error) bool {
	me, ok := model.AsError(err)
	if !ok {
		return false
	}
	switch me.Kind {
	case model.KindInvalid, model.KindUnsupported, model.KindQuota, model.KindConfig:
		return true
	}
	return false
}

func (r *ServiceReconciler) reconcile(ctx context.Context, svc *corev1.Service) error {
	log := logr.FromContextOrDiscard(ctx)
	ctx, mutations := withMutationCounter(ctx)
	changed := false

	if !controllerutil.ContainsFinalizer(svc, model.ServiceFinalizer) {
		patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(svc, model.ServiceFinalizer)
		if err := r.client.Patch(ctx, svc, patch); err != nil {
			r.events.warning(ctx, svc, ReasonFailedAddFinalizer, "AddFinalizer", "Failed add finalizer due to %v", err)
			return err
		}
		changed = true
	}

	start := time.Now()
	stack, err := r.deployer.Build(ctx, svc)
	timeStage(serviceControllerName, stageBuild, start)
	if err != nil {
		r.events.warning(ctx, svc, ReasonFailedBuildModel, "BuildModel", "Failed build model due to %v", err)
		if permanent(err) {
			log.Info("cannot build the Service's model: waiting for the Service to change", "error", err.Error())
			return nil
		}
		return err
	}

	start = time.Now()
	targets, err := r.stackTargets(ctx, svc, stack)
	timeStage(serviceControllerName, stageTargets, start)
	if err != nil {
		r.events.warning(ctx, svc, ReasonFailedDeployModel, "DeployModel", "Failed deploy model due to %v", err)
		return err
	}

	start = time.Now()
	var keys []string
	for _, b := range stack.TargetGroupBindings {
		if b.Spec.Networking != nil && len(b.Spec.Networking.Ingress) > 0 {
			keys = append(keys, b.Namespace+"/"+b.Name)
		}
	}
	r.registry.set(stack.ID, keys)
	res, err := r.deployer.Deploy(ctx, stack, targets)
	timeStage(serviceControllerName, stageDeploy, start)
	for _, c := range res.Conditions {
		log.V(1).Info("deploy condition", "binding", c.Binding, "reason", c.Reason, "message", c.Message)
	}
	if err != nil {
		r.events.warning(ctx, svc, ReasonFailedDeployModel, "DeployModel", "Failed deploy model due to %v", err)
		return err
	}

	start = time.Now()
	defer timeStage(serviceControllerName, stageStatus, start)
	tgbChanged, err := r.syncBindingObjects(ctx, svc, stack, res)
	if err != nil {
		r.events.warning(ctx, svc, ReasonFailedDeployModel, "DeployModel", "Failed deploy model due to %v", err)
		return err
	}
	statusChanged, err := r.updateStatus(ctx, svc, res.DNSName)
	if err != nil {
		r.events.warning(ctx, svc, ReasonFailedUpdateStatus, "UpdateStatus", "Failed update status due to %v", err)
		return err
	}
	changed = changed || tgbChanged || statusChanged || mutations.Load() > 0
	if changed {
		log.Info("deployed load balancer", "dnsName", res.DNSName, "targetGroups", len(res.TargetGroupARNs), "awsChanges", mutations.Load())
	}
	r.events.normal(svc, changed, ReasonSuccessfullyReconciled, "Reconcile", "Successfully reconciled")
	return nil
}

// stackTargets computes the targets of each of the stack's bindings.
func (r *ServiceReconciler) stackTargets(ctx context.Context, svc *corev1.Service, stack model.Stack) (deploy.Targets, error) {
	out := deploy.Targets{}
	for _, b := range stack.TargetGroupBindings {
		bt := bindingTargets{TargetType: b.Spec.TargetType, Port: b.Spec.ServiceRef.Port, IPv6: b.Spec.IPAddressType == model.IPAddressTypeIPv6}
		if len(b.Spec.NodeSelector) > 0 {
			bt.NodeSelector = labels.SelectorFromSet(b.Spec.NodeSelector)
		}
		ts, err := r.targets.resolve(ctx, svc, bt)
		if err != nil {
			return nil, fmt.Errorf("targets of %s: %w", b.ResourceID, err)
		}
		out[b.ResourceID] = ts
	}
	return out, nil
}

// updateStatus writes the load balancer's DNS name and the Service's ports into
// status.loadBalancer.ingress, as the AWS controller does (one hostname, no IP, a port status per
// Service port), only when it differs; the ports' order does not matter.
func (r *ServiceReconciler) updateStatus(ctx context.Context, svc *corev1.Service, dnsName string) (bool, error) {
	ports := statusPorts(svc)
	ing := svc.Status.LoadBalancer.Ingress
	if len(ing) == 1 && ing[0].IP == "" && ing[0].Hostname == dnsName && samePorts(ing[0].Ports, ports) {
		return false, nil
	}
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: dnsName, Ports: ports}}
	if err := r.client.Status().Patch(ctx, svc, patch); err != nil {
		return false, fmt.Errorf("update status of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return true, nil
}

// statusPorts is a port status per Service port: its port and protocol.
func statusPorts(svc *corev1.Service) []corev1.PortStatus {
	var ports []corev1.PortStatus
	for _, p := range svc.Spec.Ports {
		ports = append(ports, corev1.PortStatus{Port: p.Port, Protocol: p.Protocol})
	}
	return ports
}

func samePorts(a, b []corev1.PortStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range b {
		if !slices.ContainsFunc(a, func(q corev1.PortStatus) bool { return apiequality.Semantic.DeepEqual(p, q) }) {
			return false
		}
	}
	return true
}

// bindingObjects lists the TargetGroupBinding objects of a Service's stack.
func (r *ServiceReconciler) bindingObjects(ctx context.Context, svc *corev1.Service) ([]elbv2api.TargetGroupBinding, error) {
	var list elbv2api.TargetGroupBindingList
	err := r.client.List(ctx, &list, client.InNamespace(svc.Namespace),
		client.MatchingLabels{model.LabelStackNamespace: svc.Namespace, model.LabelStackName: svc.Name})
	if err != nil {
		return nil, fmt.Errorf("list target group bindings of %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return list.Items, nil
}

// syncBindingObjects makes the stack's TargetGroupBinding objects exist as the stack has them
// (with the target groups' ARNs and the resolved networking), and deletes the others.
func (r *ServiceReconciler) syncBindingObjects(ctx context.Context, svc *corev1.Service, stack model.Stack, res deploy.Result) (bool, error) {
	have, err := r.bindingObjects(ctx, svc)
	if err != nil {
		return false, err
	}
	resolve := func(t model.Token) string {
		switch {
		case !t.IsRef():
			return t.Literal
		case t.Ref == model.ManagedSecurityGroupIDRef.Ref && len(res.SecurityGroups) > 0:
			return res.SecurityGroups[0]
		}
		for id, arn := range res.TargetGroupARNs {
			if t.Ref == model.TargetGroupARNRef(id).Ref {
				return arn
			}
		}
		return ""
	}
	changed := false
	var want []string
	for _, b := range stack.TargetGroupBindings {
		want = append(want, b.Name)
		obj := desiredBindingObject(svc, b, resolve)
		i := slices.IndexFunc(have, func(o elbv2api.TargetGroupBinding) bool { return o.Name == b.Name })
		if i < 0 {
			if err := r.client.Create(ctx, obj); err != nil {
				if apierrors.IsAlreadyExists(err) {
					continue // the cache lags; the next reconcile compares it
				}
				return changed, fmt.Errorf("create target group binding %s/%s: %w", obj.Namespace, obj.Name, err)
			}
			changed = true
			continue
		}
		cur := have[i]
		if apiequality.Semantic.DeepEqual(cur.Spec, obj.Spec) && labels.Equals(cur.Labels, obj.Labels) &&
			controllerutil.ContainsFinalizer(&cur, TargetGroupBindingFinalizer) {
			continue
		}
		cur.Spec, cur.Labels = obj.Spec, obj.Labels
		controllerutil.AddFinalizer(&cur, TargetGroupBindingFinalizer)
		if err := r.client.Update(ctx, &cur); err != nil {
			return changed, fmt.Errorf("update target group binding %s/%s: %w", cur.Namespace, cur.Name, err)
		}
		changed = true
	}
	for i := range have {
		if slices.Contains(want, have[i].Name) {
			continue
		}
		if err := r.deleteBindingObject(ctx, &have[i]); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

// deleteBindingObject deletes one of a stack's TargetGroupBinding objects once the deploy stage
// has deleted its target group. Its finalizer (elbv2.k8s.aws/resources, which moat's bindings
// carry as the AWS controller's do) guards the target group's targets; with the target group gone
// there is nothing left for it to guard, so it goes first and the object does not stay
// Terminating, whichever controller put it there.
func (r *ServiceReconciler) deleteBindingObject(ctx context.Context, b *elbv2api.TargetGroupBinding) error {
	if err := dropBindingFinalizer(ctx, r.client, b); err != nil {
		return err
	}
	if err := r.client.Delete(ctx, b); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete target group binding %s/%s: %w", b.Namespace, b.Name, err)
	}
	return nil
}

// dropBindingFinalizer removes elbv2.k8s.aws/resources from a binding, if it has it.
func dropBindingFinalizer(ctx context.Context, c client.Client, b *elbv2api.TargetGroupBinding) error {
	if !controllerutil.ContainsFinalizer(b, TargetGroupBindingFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(b.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(b, TargetGroupBindingFinalizer)
	if err := c.Patch(ctx, b, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer of target group binding %s/%s: %w", b.Namespace, b.Name, err)
	}
	return nil
}

// desiredBindingObject is the TargetGroupBinding object of one of a stack's bindings, owned by
// the Service.
func desiredBindingObject(svc *corev1.Service, b model.TargetGroupBinding, resolve func(model.Token) string) *elbv2api.TargetGroupBinding {
	targetType := elbv2api.TargetType(b.Spec.TargetType)
	ipType := elbv2api.TargetGroupIPAddressTypeIPv4
	if b.Spec.IPAddressType == model.IPAddressTypeIPv6 {
		ipType = elbv2api.TargetGroupIPAddressTypeIPv6
	}
	protocol := elbv2api.TargetGroupProtocol(b.Spec.TargetGroupProtocol)
	obj := &elbv2api.TargetGroupBinding{
		ObjectMeta: metav1.ObjectMeta{
			Name:            b.Name,
			Namespace:       b.Namespace,
			Labels:          b.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))},
			Finalizers:      []string{TargetGroupBindingFinalizer},
		},
		Spec: elbv2api.TargetGroupBindingSpec{
			TargetGroupARN:          resolve(b.Spec.TargetGroupARN),
			MultiClusterTargetGroup: b.Spec.MultiClusterTargetGroup,
			TargetType:              &targetType,
			TargetGroupProtocol:     &protocol,
			ServiceRef:              elbv2api.ServiceReference{Name: b.Spec.ServiceRef.Name, Port: b.Spec.ServiceRef.Port},
			Networking:              toAPINetworking(b.Spec.Networking, resolve),
			IPAddressType:           &ipType,
			VpcID:                   b.Spec.VPCID,
		},
	}
	if len(b.Spec.NodeSelector) > 0 {
		obj.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: b.Spec.NodeSelector}
	}
	return obj
}

// cleanup deletes everything the Service's stack owns, then its TargetGroupBinding objects, its
// status and its finalizer, in that order, so that a crash at any point leaves the finalizer on
// and the next reconcile carries on.
func (r *ServiceReconciler) cleanup(ctx context.Context, svc *corev1.Service) error {
	log := logr.FromContextOrDiscard(ctx)
	stackID := svc.Namespace + "/" + svc.Name
	start := time.Now()
	defer timeStage(serviceControllerName, stageCleanup, start)

	// The build of a Service that is going away is an empty stack, unless it asks for deletion
	// protection: then nothing is deleted.
	if _, err := r.deployer.Build(ctx, svc); err != nil {
		r.events.warning(ctx, svc, ReasonFailedBuildModel, "BuildModel", "Failed build model due to %v", err)
		if permanent(err) {
			return nil
		}
		return err
	}
	r.registry.set(stackID, nil)
	if err := r.deployer.Delete(ctx, stackID); err != nil {
		r.events.warning(ctx, svc, ReasonFailedDeployModel, "DeployModel", "Failed deploy model due to %v", err)
		return err
	}
	have, err := r.bindingObjects(ctx, svc)
	if err != nil {
		return err
	}
	for i := range have {
		if err := r.deleteBindingObject(ctx, &have[i]); err != nil {
			return err
		}
	}
	if svc.DeletionTimestamp == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
		if err := r.client.Status().Patch(ctx, svc, patch); err != nil {
			r.events.warning(ctx, svc, ReasonFailedCleanupStatus, "CleanupStatus", "Failed update status due to %v", err)
			return err
		}
	}
	patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(svc, model.ServiceFinalizer)
	if err := r.client.Patch(ctx, svc, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		r.events.warning(ctx, svc, ReasonFailedRemoveFinalizer, "RemoveFinalizer", "Failed remove finalizer due to %v", err)
		return err
	}
	r.events.forget(svc.UID)
	log.Info("deleted load balancer resources", "stack", stackID)
	return nil
}
