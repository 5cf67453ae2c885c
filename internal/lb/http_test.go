package lb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/firewall"
)

// startLB runs moat lb in this process on loopback ports, with the userspace data plane, until
// the test ends.
func startLB(t *testing.T, limits APILimits) Endpoints {
	t.Helper()
	return startLBWith(t, func(cfg *Config) { cfg.API = limits })
}

// startLBWith is startLB with the configuration that change makes.
func startLBWith(t *testing.T, change func(*Config)) Endpoints {
	t.Helper()
	cfg := validConfig()
	cfg.DataDir = t.TempDir()
	cfg.APIAddr, cfg.DNSAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.FastPath = FastPathOff
	cfg.InstanceSGMode = firewall.Off // the host's loopback is shared with other tests
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	change(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Endpoints, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, func(eps Endpoints) { ready <- eps }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("moat lb: %v", err)
		}
	})
	select {
	case eps := <-ready:
		return eps
	case err := <-done:
		done <- err
		t.Fatalf("moat lb did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("moat lb did not start within 30s")
	}
	return Endpoints{}
}

func apiHost(t *testing.T, eps Endpoints) string {
	t.Helper()
	u, err := url.Parse(eps.API)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// metrics reads the samples of moat lb's /metrics in one scrape, by their name and labels as
// written (`name` or `name{label="value"}`).
func metrics(t *testing.T, eps Endpoints) map[string]float64 {
	t.Helper()
	resp, err := http.Get(eps.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// metric reads one sample of moat lb's /metrics.
func metric(t *testing.T, eps Endpoints, sample string) float64 {
	t.Helper()
	v, ok := metrics(t, eps)[sample]
	if !ok {
		t.Fatalf("no sample %s in /metrics", sample)
	}
	return v
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A body dripped one byte at a time is cut off at the read timeout, with AWS's RequestTimeout,
// and its connection closed: it cannot hold a connection for as long as it likes.
func TestAPISlowDripBodyTimesOut(t *testing.T) {
	const timeout = 500 * time.Millisecond
	eps := startLB(t, APILimits{MaxConnections: 16, ReadTimeout: timeout, IdleTimeout: time.Minute})
	// The server's clock starts at accept, which may come before Dial returns here.
	start := time.Now()
	conn, err := net.Dial("tcp", apiHost(t, eps))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 100 bytes at one per 100 ms would take 10 s to arrive.
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: moat\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	dripped := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dripped <- n }()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n < 100 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte("a")); err != nil {
				return
			}
			n++
		}
	}()
	defer func() { close(stop); <-dripped }()

	_ = conn.SetReadDeadline(start.Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a dripped body within 5s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("<Code>RequestTimeout</Code>")) {
		t.Errorf("answer %d %s, want 400 RequestTimeout", resp.StatusCode, body)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("cut off after %s, before the %s timeout", elapsed, timeout)
	}
	// The server closes the connection (a reset, as the drip goes on writing).
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after the timeout the connection reads %v, want it closed", err)
	}
}

// A slow but honest client still gets its largest body (1 MiB) through within the read timeout.
func TestAPISlowHonestBodyArrives(t *testing.T) {
	eps := startLB(t, APILimits{MaxConnections: 16, ReadTimeout: 5 * time.Second, IdleTimeout: time.Minute})
	conn, err := net.Dial("tcp", apiHost(t, eps))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	form := "Action=DescribeLoadBalancers&Version=2015-12-01&Marker="
	body := form + strings.Repeat("a", 1<<20-len(form))
	if _, err := fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: moat\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n", len(body)); err != nil {
		t.Fatal(err)
	}
	// 16 pieces of 64 KiB, 50 ms apart: about 1.3 MB/s, over most of a second.
	for piece := range 16 {
		if _, err := io.WriteString(conn, body[piece<<16:(piece+1)<<16]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The body was read and parsed whole: the request fails only for want of a signature.
	if resp.StatusCode != http.StatusForbidden || !bytes.Contains(got, []byte("MissingAuthenticationToken")) {
		t.Errorf("answer %d %s, want 403 MissingAuthenticationToken", resp.StatusCode, got)
	}
}

// A flood of connections beyond --api-max-connections, busy and idle, neither exhausts moat lb
// nor locks a normal SDK client out: idle ones make room, refused ones are answered 503 with the
// service's throttling code (which the SDK retries) and counted.
func TestAPIConnectionFlood(t *testing.T) {
	const max = 8
	eps := startLB(t, APILimits{MaxConnections: max, ReadTimeout: time.Second, IdleTimeout: time.Minute})
	host := apiHost(t, eps)

	// Every slot busy: requests whose bodies trickle in, until the read timeout cuts them off.
	for range max {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: moat\r\nContent-Length: 1000\r\n\r\na"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all connections busy", func() bool {
		return metric(t, eps, `moat_api_connections_open{state="busy"}`) == max
	})

	// One more is refused: 503 in EC2's error format, as its Version asks.
	probe, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if _, err := io.WriteString(probe, "GET /?Action=DescribeVpcs&Version=2016-11-15 HTTP/1.1\r\nHost: moat\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = probe.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(probe), nil)
	if err != nil {
		t.Fatalf("a connection beyond the cap got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("<Code>RequestLimitExceeded</Code>")) || !resp.Close {
		t.Errorf("refused with %d %s (close %v), want 503 RequestLimitExceeded and Connection: close", resp.StatusCode, body, resp.Close)
	}
	if n := metric(t, eps, "moat_api_connections_refused_total"); n < 1 {
		t.Errorf("moat_api_connections_refused_total %v after a refusal", n)
	}

	// The flood: 4× the cap of connections that send nothing, each reopened as soon as moat lb
	// closes it, for as long as the client below works.
	stop := make(chan struct{})
	var flood sync.WaitGroup
	for range 4 * max {
		flood.Go(func() {
			stopped := func() bool {
				select {
				case <-stop:
					return true
				default:
					return false
				}
			}
			for !stopped() {
				c, err := net.Dial("tcp", host)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				for !stopped() { // hold it until moat lb closes it
					_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					if _, err := c.Read(make([]byte, 512)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
						break
					}
				}
				c.Close()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	defer func() { close(stop); flood.Wait() }()

	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{eps.CredentialsFile}),
		config.WithSharedConfigFiles([]string{}),
		config.WithRegion("us-east-1"),
		config.WithRetryMaxAttempts(10),
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(eps.API) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := client.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
			t.Fatalf("call %d during the flood: %v", i, err)
		}
	}
	m := metrics(t, eps)
	if busy, idle := m[`moat_api_connections_open{state="busy"}`], m[`moat_api_connections_open{state="idle"}`]; busy+idle > max {
		t.Errorf("%v busy and %v idle connections open, more than the cap of %d", busy, idle, max)
	}
	if n := metric(t, eps, "moat_api_connections_evicted_total"); n < 1 {
		t.Errorf("moat_api_connections_evicted_total %v after an idle flood", n)
	}
}
