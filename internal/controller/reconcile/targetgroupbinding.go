package reconcile

import (
	"time"

	"context"
	"fmt"

	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// tgbControllerName names the TargetGroupBinding controller.
const tgbControllerName = "targetGroupBinding"

// TargetGroupBindingReconciler reconciles TargetGroupBindings made by hand: the targets of the
// bound Service port, and the networking rules on the targets' security groups. Bindings of a
// Service's stack are left to the Service reconciler, which deploys them with the stack.
type TargetGroupBindingReconciler struct {
	client   client.Client
	elb      deploy.ELBV2
	deployer *deploy.Deployer
	targets  *targetResolver
	events   *eventSink
}

// Reconcile registers one binding's targets and writes its rules, or, once it is being
// deleted, deregisters them and revokes its rules before dropping the finalizer.
func (r *TargetGroupBindingReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	tgb := &elbv2api.TargetGroupBinding{}
	if err := r.client.Get(ctx, req.NamespacedName, tgb); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if stackOf(tgb) != "" {
		// A stack's binding is the Service reconciler's, with its target group's targets. One
		// being deleted out of turn (by hand, or left by the AWS controller) loses its finalizer
		// here; if the Service still wants it, the Service reconciler makes it again.
		if tgb.DeletionTimestamp != nil {
			return reconcile.Result{}, dropBindingFinalizer(ctx, r.client, tgb)
		}
		return reconcile.Result{}, nil
	}
	if tgb.DeletionTimestamp != nil {
		return reconcile.Result{}, r.cleanup(ctx, tgb)
	}
	return reconcile.Result{}, r.reconcile(ctx, tgb)
}

func (r *TargetGroupBindingReconciler) reconcile(ctx context.Context, tgb *elbv2api.TargetGroupBinding) error {
	log := logr.FromContextOrDiscard(ctx)
	ctx, mutations := withMutationCounter(ctx)
	changed := false
	if !controllerutil.ContainsFinalizer(tgb, TargetGroupBindingFinalizer) {
		patch := client.MergeFromWithOptions(tgb.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(tgb, TargetGroupBindingFinalizer)
		if err := r.client.Patch(ctx, tgb, patch); err != nil {
			r.events.warning(ctx, tgb, ReasonFailedAddFinalizer, "AddFinalizer", "Failed add finalizer due to %v", err)
			return err
		}
		changed = true
	}
	key := tgb.Namespace + "/" + tgb.Name
	b := deploy.Binding{Key: key, TargetGroupARN: tgb.Spec.TargetGroupARN, Networking: toModelNetworking(tgb.Spec.Networking)}

	svc := &corev1.Service{}
	err := r.client.Get(ctx, types.NamespacedName{Namespace: tgb.Namespace, Name: tgb.Spec.ServiceRef.Name}, svc)
	switch {
	case apierrors.IsNotFound(err):
		// As the AWS controller: a binding whose Service is missing has no targets.
		r.events.warning(ctx, tgb, ReasonBackendNotFound, "ResolveEndpoints", "service %s/%s not found", tgb.Namespace, tgb.Spec.ServiceRef.Name)
		// Its key stays known to the deploy stage (with no rules), so that other bindings'
		// stale rules can still be revoked.
		if _, err := r.deployer.ReconcileBinding(ctx, b); err != nil {
			r.events.warning(ctx, tgb, ReasonFailedNetworkReconcile, "Reconcile", "Failed reconcile due to %v", err)
			return err
		}
		return nil
	case err != nil:
		return err
	}

	start := time.Now()
	bt, err := r.bindingTargets(ctx, tgb)
	if err != nil {
		r.events.warning(ctx, tgb, ReasonFailedNetworkReconcile, "Reconcile", "Failed reconcile due to %v", err)
		return err
	}
	b.TargetType = bt.TargetType
	if b.Targets, err = r.targets.resolve(ctx, svc, bt); err != nil {
		r.events.warning(ctx, tgb, ReasonBackendNotFound, "ResolveEndpoints", "%v", err)
		return err
	}
	timeStage(tgbControllerName, stageTargets, start)

	start = time.Now()
	conds, err := r.deployer.ReconcileBinding(ctx, b)
	timeStage(tgbControllerName, stageDeploy, start)
	for _, c := range conds {
		log.V(1).Info("binding condition", "reason", c.Reason, "message", c.Message)
	}
	if err != nil {
		r.events.warning(ctx, tgb, ReasonFailedNetworkReconcile, "Reconcile", "Failed reconcile due to %v", err)
		return err
	}

	start = time.Now()
	defer timeStage(tgbControllerName, stageStatus, start)
	if tgb.Status.ObservedGeneration == nil || *tgb.Status.ObservedGeneration != tgb.Generation {
		patch := client.MergeFrom(tgb.DeepCopy())
		tgb.Status.ObservedGeneration = &tgb.Generation
		if err := r.client.Status().Patch(ctx, tgb, patch); err != nil {
			r.events.warning(ctx, tgb, ReasonFailedUpdateStatus, "UpdateStatus", "Failed update status due to %v", err)
			return err
		}
		changed = true
	}
	changed = changed || mutations.Load() > 0
	if changed {
		log.Info("reconciled target group binding", "targetGroup", b.TargetGroupARN, "targets", len(b.Targets), "awsChanges", mutations.Load())
	}
	r.events.normal(tgb, changed, ReasonSuccessfullyReconciled, "Reconcile", "Successfully reconciled")
	return nil
}

// bindingTargets reads which endpoints the binding registers; the target type and IP address
// type default to the target group's.
func (r *TargetGroupBindingReconciler) bindingTargets(ctx context.Context, tgb *elbv2api.TargetGroupBinding) (bindingTargets, error) {
	bt := bindingTargets{Port: tgb.Spec.ServiceRef.Port}
	if tgb.Spec.TargetType != nil {
		bt.TargetType = model.TargetType(*tgb.Spec.TargetType)
	}
	if tgb.Spec.IPAddressType != nil {
		bt.IPv6 = *tgb.Spec.IPAddressType == elbv2api.TargetGroupIPAddressTypeIPv6
	}
	if tgb.Spec.TargetType == nil || tgb.Spec.IPAddressType == nil {
		out, err := r.elb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{tgb.Spec.TargetGroupARN}})
		if err != nil {
			return bt, fmt.Errorf("describe target group %s: %w", tgb.Spec.TargetGroupARN, err)
		}
		if len(out.TargetGroups) != 1 {
			return bt, fmt.Errorf("target group %s not found", tgb.Spec.TargetGroupARN)
		}
		tg := out.TargetGroups[0]
		if tgb.Spec.TargetType == nil {
			bt.TargetType = model.TargetType(tg.TargetType)
		}
		if tgb.Spec.IPAddressType == nil {
			bt.IPv6 = string(tg.IpAddressType) == string(elbv2api.TargetGroupIPAddressTypeIPv6)
		}
	}
	if bt.TargetType != model.TargetTypeInstance && bt.TargetType != model.TargetTypeIP {
		return bt, fmt.Errorf("target group %s has target type %q: only instance and ip are supported", tgb.Spec.TargetGroupARN, bt.TargetType)
	}
	if tgb.Spec.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(tgb.Spec.NodeSelector)
		if err != nil {
			return bt, fmt.Errorf("nodeSelector: %w", err)
		}
		bt.NodeSelector = sel
	}
	return bt, nil
}

// cleanup deregisters the binding's targets and revokes its rules, then drops the finalizer.
func (r *TargetGroupBindingReconciler) cleanup(ctx context.Context, tgb *elbv2api.TargetGroupBinding) error {
	if !controllerutil.ContainsFinalizer(tgb, TargetGroupBindingFinalizer) {
		return nil
	}
	start := time.Now()
	defer timeStage(tgbControllerName, stageCleanup, start)
	if err := r.deployer.CleanupBinding(ctx, tgb.Namespace+"/"+tgb.Name, tgb.Spec.TargetGroupARN); err != nil {
		r.events.warning(ctx, tgb, ReasonFailedCleanup, "Cleanup", "Failed cleanup due to %v", err)
		return err
	}
	patch := client.MergeFromWithOptions(tgb.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(tgb, TargetGroupBindingFinalizer)
	if err := r.client.Patch(ctx, tgb, patch); client.IgnoreNotFound(err) != nil {
		r.events.warning(ctx, tgb, ReasonFailedRemoveFinalizer, "RemoveFinalizer", "Failed remove finalizer due to %v", err)
		return err
	}
	r.events.forget(tgb.UID)
	return nil
}
