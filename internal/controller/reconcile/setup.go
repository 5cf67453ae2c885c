package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// Config configures the reconcilers: the controller's flags, by the AWS controller's names.
type Config struct {
	// Model is the configuration stacks are built with (--cluster-name, --aws-vpc-id, gates,
	// backend group flags, tags).
	Model model.Config
	// AWS is the SDK configuration (region, credentials, retries).
	AWS aws.Config
	// Endpoints are the --aws-api-endpoints overrides.
	Endpoints Endpoints
	// ServiceTargetENISGTags is --service-target-eni-security-group-tags.
	ServiceTargetENISGTags map[string]string
	// DeleteRetry bounds the deploy stage's retries of deletions (zero: its default).
	DeleteRetry deploy.Backoff
	// ServiceMaxConcurrentReconciles is --service-max-concurrent-reconciles (default 3).
	ServiceMaxConcurrentReconciles int
	// TargetGroupBindingMaxConcurrentReconciles is
	// --targetgroupbinding-max-concurrent-reconciles (default 3).
	TargetGroupBindingMaxConcurrentReconciles int
	// TargetGroupBindingMaxBackoff is --targetgroupbinding-max-exponential-backoff-delay
	// (default 16m40s).
	TargetGroupBindingMaxBackoff time.Duration
	// DisableServiceController leaves Services alone (feature gate EnableServiceController=false):
	// only TargetGroupBindings made by hand are reconciled.
	DisableServiceController bool
	// SkipNameValidation lets several managers run in one process (tests).
	SkipNameValidation bool
}

// NewScheme returns a scheme with Kubernetes' built-in types and the TargetGroupBinding API.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(elbv2api.AddToScheme(s))
	return s
}

// serviceRefIndex indexes TargetGroupBindings by the Service they bind.
const serviceRefIndex = "spec.serviceRef.name"

// Setup adds the Service and TargetGroupBinding reconcilers to a manager whose scheme comes
// from NewScheme.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	registerMetrics()
	if cfg.ServiceMaxConcurrentReconciles <= 0 {
		cfg.ServiceMaxConcurrentReconciles = 3
	}
	if cfg.TargetGroupBindingMaxConcurrentReconciles <= 0 {
		cfg.TargetGroupBindingMaxConcurrentReconciles = 3
	}
	if cfg.TargetGroupBindingMaxBackoff <= 0 {
		cfg.TargetGroupBindingMaxBackoff = 1000 * time.Second
	}
	clients := newClients(cfg.AWS, cfg.Endpoints)
	c := mgr.GetClient()
	registry := newBindingRegistry(c, cfg.Model)
	d, err := deploy.New(clients.ec2, clients.elb, deploy.Options{
		Model:                  cfg.Model,
		ServiceTargetENISGTags: cfg.ServiceTargetENISGTags,
		Bindings:               registry.keys,
		DeleteRetry:            cfg.DeleteRetry,
		Tagging:                clients.tagging,
	})
	if err != nil {
		return err
	}
	targets := newTargetResolver(c, clients.ec2, cfg.Model.VPCID)

	if err := mgr.GetFieldIndexer().IndexField(ctx, &elbv2api.TargetGroupBinding{}, serviceRefIndex, func(o client.Object) []string {
		return []string{o.(*elbv2api.TargetGroupBinding).Spec.ServiceRef.Name}
	}); err != nil {
		return fmt.Errorf("index target group bindings: %w", err)
	}

	var skip *bool // nil: the manager's setting
	if cfg.SkipNameValidation {
		skip = &cfg.SkipNameValidation
	}
	if !cfg.DisableServiceController {
		svcR := &ServiceReconciler{
			client: c, cfg: cfg.Model, deployer: d, targets: targets, registry: registry,
			events: newEventSink(mgr.GetEventRecorder(serviceControllerName)),
		}
		err = ctrl.NewControllerManagedBy(mgr).
			Named(serviceControllerName).
			For(&corev1.Service{}, builder.WithPredicates(serviceChanged)).
			Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(endpointSliceToService)).
			Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(svcR.nodeToServices), builder.WithPredicates(nodeChanged)).
			Watches(&elbv2api.TargetGroupBinding{}, handler.EnqueueRequestsFromMapFunc(bindingToStackService), builder.WithPredicates(bindingTouched)).
			WithOptions(controller.Options{MaxConcurrentReconciles: cfg.ServiceMaxConcurrentReconciles, SkipNameValidation: skip}).
			Complete(svcR)
		if err != nil {
			return fmt.Errorf("set up service controller: %w", err)
		}
	}

	tgbR := &TargetGroupBindingReconciler{
		client: c, elb: clients.elb, deployer: d, targets: targets,
		events: newEventSink(mgr.GetEventRecorder(tgbControllerName)),
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named(tgbControllerName).
		For(&elbv2api.TargetGroupBinding{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			// Of a stack's bindings, only those being deleted: see Reconcile.
			return stackOf(o.(*elbv2api.TargetGroupBinding)) == "" || o.GetDeletionTimestamp() != nil
		}))).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(tgbR.serviceToBindings)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(tgbR.endpointSliceToBindings)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(tgbR.nodeToBindings), builder.WithPredicates(nodeChanged)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: cfg.TargetGroupBindingMaxConcurrentReconciles,
			SkipNameValidation:      skip,
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](
				5*time.Millisecond, cfg.TargetGroupBindingMaxBackoff),
		}).
		Complete(tgbR)
	if err != nil {
		return fmt.Errorf("set up target group binding controller: %w", err)
	}
	return nil
}

// endpointSliceToService maps an EndpointSlice to its Service.
func endpointSliceToService(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[serviceNameLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// bindingToStackService maps a TargetGroupBinding of a Service's stack to the Service, so that
// a binding object deleted or edited by hand is put back.
func bindingToStackService(_ context.Context, o client.Object) []reconcile.Request {
	tgb := o.(*elbv2api.TargetGroupBinding)
	if stackOf(tgb) == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{
		Namespace: tgb.Labels[model.LabelStackNamespace], Name: tgb.Labels[model.LabelStackName]}}}
}

// nodeToServices maps a Node to every Service the controller provisioned (those with its
// finalizer): any of them may have instance targets.
func (r *ServiceReconciler) nodeToServices(ctx context.Context, _ client.Object) []reconcile.Request {
	var list corev1.ServiceList
	if err := r.client.List(ctx, &list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot list services for a node change")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		svc := &list.Items[i]
		if model.Selected(svc, r.cfg) || hasFinalizer(svc, model.ServiceFinalizer) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(svc)})
		}
	}
	return out
}

func hasFinalizer(o client.Object, f string) bool {
	for _, x := range o.GetFinalizers() {
		if x == f {
			return true
		}
	}
	return false
}

// handMadeBindings returns the requests of the hand-made bindings matching the list options.
func (r *TargetGroupBindingReconciler) handMadeBindings(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list elbv2api.TargetGroupBindingList
	if err := r.client.List(ctx, &list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot list target group bindings")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if stackOf(&list.Items[i]) == "" {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

func (r *TargetGroupBindingReconciler) serviceToBindings(ctx context.Context, o client.Object) []reconcile.Request {
	return r.handMadeBindings(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{serviceRefIndex: o.GetName()})
}

func (r *TargetGroupBindingReconciler) endpointSliceToBindings(ctx context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[serviceNameLabel]
	if name == "" {
		return nil
	}
	return r.handMadeBindings(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{serviceRefIndex: name})
}

func (r *TargetGroupBindingReconciler) nodeToBindings(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.handMadeBindings(ctx)
}

// serviceChanged passes Service events that can change its stack: creation, deletion, resyncs,
// and updates of its annotations, spec, finalizers or deletion timestamp. It leaves out what the
// reconciler writes itself in the reconcile that follows a create, so that a new Service costs
// one reconcile: the status, and the finalizer added.
var serviceChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Service)
		b, okB := e.ObjectNew.(*corev1.Service)
		if !okA || !okB || a.ResourceVersion == b.ResourceVersion {
			return true
		}
		return !maps.Equal(a.Annotations, b.Annotations) || !apiequality.Semantic.DeepEqual(a.Spec, b.Spec) ||
			(!slices.Equal(a.Finalizers, b.Finalizers) && !finalizerAdded(a.Finalizers, b.Finalizers)) ||
			!a.DeletionTimestamp.Equal(b.DeletionTimestamp)
	},
}

// finalizerAdded reports whether after is before with the Service finalizer added.
func finalizerAdded(before, after []string) bool {
	others := slices.DeleteFunc(slices.Clone(after), func(f string) bool { return f == model.ServiceFinalizer })
	return !slices.Contains(before, model.ServiceFinalizer) && len(others) == len(after)-1 && slices.Equal(others, before)
}

// bindingTouched passes the events of a stack's TargetGroupBinding that someone else may have
// caused: its deletion and changes of its spec (not its creation, which the Service reconciler
// does itself).
var bindingTouched = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() || e.ObjectNew.GetDeletionTimestamp() != nil
	},
	DeleteFunc:  func(event.DeleteEvent) bool { return true },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// nodeChanged passes Node events that can change targets: creation, deletion, and updates of
// labels, taints, the provider ID or the addresses (not the kubelet's heartbeats).
var nodeChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Node)
		b, okB := e.ObjectNew.(*corev1.Node)
		if !okA || !okB {
			return true
		}
		return !maps.Equal(a.Labels, b.Labels) || a.Spec.ProviderID != b.Spec.ProviderID ||
			!equalTaints(a.Spec.Taints, b.Spec.Taints) || !equalAddresses(a.Status.Addresses, b.Status.Addresses)
	},
}

func equalTaints(a, b []corev1.Taint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Value != b[i].Value || a[i].Effect != b[i].Effect {
			return false
		}
	}
	return true
}

func equalAddresses(a, b []corev1.NodeAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
