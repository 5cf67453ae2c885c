package dataplane

import (
	"encoding/json"
	"io"
	"net/netip"
	"sync"
	"time"
)

// flowLog writes one JSON line per denied flow:
//
//	{"time":"2026-…Z","load_balancer":"arn:…","listener":"arn:…","protocol":"tcp","client":"127.0.0.3:40522","reason":"security_group"}
//
// Only denials the data plane sees are logged: accept-and-reset and UDP
// datagrams judged in userspace, and flows without a target. Packets the
// kernel's socket filter drops are counted, but the kernel does not say whose
// they were.
type flowLog struct {
	mu sync.Mutex
	w  io.Writer
}

type flowLogEntry struct {
	Time         time.Time `json:"time"`
	LoadBalancer string    `json:"load_balancer"`
	Listener     string    `json:"listener"`
	Protocol     string    `json:"protocol"`
	Client       string    `json:"client"`
	Reason       string    `json:"reason"`
}

func (l *flowLog) denied(r *route, client netip.AddrPort, reason string) {
	if l == nil || l.w == nil {
		return
	}
	line, err := json.Marshal(flowLogEntry{
		Time: time.Now().UTC(), LoadBalancer: r.lbID, Listener: r.listenerID, Protocol: r.proto,
		Client: client.String(), Reason: reason,
	})
	if err != nil {
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(line)
}
