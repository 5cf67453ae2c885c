package reconcile

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Event reasons of the AWS controller; users' alerts key on them.
const (
	ReasonSuccessfullyReconciled = "SuccessfullyReconciled"
	ReasonFailedBuildModel       = "FailedBuildModel"
	ReasonFailedDeployModel      = "FailedDeployModel"
	ReasonFailedAddFinalizer     = "FailedAddFinalizer"
	ReasonFailedRemoveFinalizer  = "FailedRemoveFinalizer"
	ReasonFailedUpdateStatus     = "FailedUpdateStatus"
	ReasonFailedCleanupStatus    = "FailedCleanupStatus"
	ReasonFailedCleanup          = "FailedCleanup"
	ReasonFailedNetworkReconcile = "FailedNetworkReconcile"
	ReasonBackendNotFound        = "BackendNotFound"
)

// eventSink emits Events, but not the same warning twice in a row for an object: a retry or a
// resync that meets the same failure rewrites nothing. A success after a warning is always
// reported.
type eventSink struct {
	rec recorder.EventRecorder

	mu   sync.Mutex
	last map[types.UID]string // object → its last warning (reason + message)
}

func newEventSink(rec recorder.EventRecorder) *eventSink {
	return &eventSink{rec: rec, last: map[types.UID]string{}}
}

// warning emits a Warning Event unless it repeats the object's last one, or the controller is
// stopping (ctx is done: the failure is the shutdown's, not the object's).
func (s *eventSink) warning(ctx context.Context, obj client.Object, reason, action, format string, args ...any) {
	if ctx.Err() != nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	repeat := s.last[obj.GetUID()] == reason+"\x00"+msg
	s.last[obj.GetUID()] = reason + "\x00" + msg
	s.mu.Unlock()
	if !repeat {
		s.rec.Eventf(obj.(runtime.Object), nil, corev1.EventTypeWarning, reason, action, "%s", msg)
	}
}

// normal emits a Normal Event when changed is true or the object's last Event was a warning,
// and forgets the warning.
func (s *eventSink) normal(obj client.Object, changed bool, reason, action, msg string) {
	s.mu.Lock()
	_, warned := s.last[obj.GetUID()]
	delete(s.last, obj.GetUID())
	s.mu.Unlock()
	if changed || warned {
		s.rec.Eventf(obj.(runtime.Object), nil, corev1.EventTypeNormal, reason, action, "%s", msg)
	}
}

// forget drops what is remembered about an object that is gone.
func (s *eventSink) forget(uid types.UID) {
	s.mu.Lock()
	delete(s.last, uid)
	s.mu.Unlock()
}
