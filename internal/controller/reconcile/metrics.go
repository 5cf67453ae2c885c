package reconcile

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Reconcile stages timed by stageDuration.
const (
	stageBuild   = "build"
	stageTargets = "targets"
	stageDeploy  = "deploy"
	stageStatus  = "status"
	stageCleanup = "cleanup"
)

// stageDuration is the latency of each stage of a reconcile, as the AWS controller's
// awslbc_controller_reconcile_stage_duration, on the manager's registry (beside
// controller-runtime's own reconcile metrics).
var stageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "moat_controller_reconcile_stage_duration_seconds",
	Help:    "Duration of each stage of a reconcile (build, targets, deploy, status, cleanup), by controller.",
	Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
}, []string{"controller", "stage"})

var registerMetrics = sync.OnceFunc(func() {
	ctrlmetrics.Registry.MustRegister(stageDuration)
})

// timeStage observes the duration of a stage that started at start.
func timeStage(controller, stage string, start time.Time) {
	stageDuration.WithLabelValues(controller, stage).Observe(time.Since(start).Seconds())
}
