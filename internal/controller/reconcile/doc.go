// Package reconcile is the Kubernetes side of moat's controller, structured as the AWS Load
// Balancer Controller's: a Service reconciler and a TargetGroupBinding reconciler on a
// controller-runtime manager, in front of the pure model stage and the AWS deploy stage.
//
// The Service reconciler owns Services that model.Selected picks: it adds the finalizer
// service.k8s.aws/resources before any AWS call, builds the stack (deploy.Build: FailedBuildModel
// on a bad Service, nothing created), computes the targets of each of the stack's
// TargetGroupBindings (EndpointSlices for ip targets, Nodes for instance targets), deploys
// (FailedDeployModel and a retry with backoff on failure), keeps one TargetGroupBinding object
// per target group (elbv2.k8s.aws/v1beta1, as the AWS controller does: what kubectl shows, and
// what tells a restarted controller which bindings have rules), and writes the DNS name into
// status.loadBalancer.ingress. A reconcile that finds nothing to change makes no mutating AWS
// call, writes nothing to Kubernetes and emits no Event. When the Service goes away (or stops
// being selected) it deletes everything the Service owned and only then drops the finalizer.
//
// The deploy stage registers the targets of a Service's own bindings as part of the deploy.
// TargetGroupBindings made by hand (an existing target group bound to a Service port) are
// reconciled by the TargetGroupBinding reconciler: targets from the Service's endpoints and the
// rules of spec.networking on the targets' security groups, with the finalizer
// elbv2.k8s.aws/resources so that deleting one deregisters its targets and revokes its rules.
//
// Rules on the targets' security groups are aggregated across every binding of the cluster, and
// revoked only once the controller knows all of them (deploy.Options.Bindings); bindingRegistry
// answers that question from the TargetGroupBinding objects and from what this process deployed.
package reconcile
