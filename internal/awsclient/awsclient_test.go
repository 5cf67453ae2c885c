package awsclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/lbtest"
)

// TestAnswerSurvivesEarlyBodyClose plays, in a fixed order, the race that cut answers: the
// request's body reaches moat's API, which answers; smithy-go closes the request body; only then
// does the transport make its extra copy of the body. With the SDK's own client that copy fails
// and the transport closes the connection while the answer (larger than the transport's read
// buffer) is still being read; through HTTPClient the call succeeds.
func TestAnswerSurvivesEarlyBodyClose(t *testing.T) {
	env := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	vpc := env.VPCID(t)
	for i := range 40 {
		_, err := env.EC2.CreateSecurityGroup(t.Context(), &ec2.CreateSecurityGroupInput{
			GroupName: aws.String(fmt.Sprintf("group-%02d", i)), Description: aws.String("an answer longer than 4 KiB"), VpcId: aws.String(vpc),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSecurityGroup, Tags: []types.Tag{
				{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String("cluster")},
			}}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		client  func(aws.HTTPClient) aws.HTTPClient
		wantErr error
	}{
		{"SDK client", func(c aws.HTTPClient) aws.HTTPClient { return c }, net.ErrClosed},
		{"awsclient.HTTPClient", awsclient.HTTPClient, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &ordering{bodyClosed: make(chan struct{}), wrote: make(chan struct{}), connClosed: make(chan struct{})}
			sdk := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
				tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					return &heldConn{Conn: c, o: o}, err
				}
			})
			client := ec2.NewFromConfig(env.Config, func(opts *ec2.Options) { opts.HTTPClient = o.wrap(tc.client(sdk)) })
			out, err := client.DescribeSecurityGroups(t.Context(), &ec2.DescribeSecurityGroupsInput{})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("DescribeSecurityGroups: %v, want %v", err, tc.wantErr)
			}
			if err == nil && len(out.SecurityGroups) < 40 {
				t.Fatalf("%d groups answered, want at least 40", len(out.SecurityGroups))
			}
		})
	}
}

// ordering holds each step of the race until the one before it has happened.
type ordering struct {
	bodyClosed    chan struct{} // smithy-go closed the request body
	closeBodyOnce sync.Once
	wrote         chan struct{} // the transport finished writing the request
	wroteErr      error
	connClosed    chan struct{}
	closeConnOnce sync.Once
}

func (o *ordering) await(t <-chan struct{}) error {
	select {
	case <-t:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("test: a step of the race did not happen")
	}
}

// wrap observes the close of each request body and delays reading the answer until the
// transport has written the request, and, if that failed, closed the connection.
func (o *ordering) wrap(c aws.HTTPClient) aws.HTTPClient {
	return smithyhttp.ClientDoFunc(func(req *http.Request) (*http.Response, error) {
		// In place: smithy-go closes the body of the request it passed.
		req.Body = &closeSignal{ReadCloser: req.Body, o: o}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest: func(info httptrace.WroteRequestInfo) { o.wroteErr = info.Err; close(o.wrote) },
		}))
		resp, err := c.Do(req)
		if err == nil {
			resp.Body = &gatedBody{ReadCloser: resp.Body, o: o}
		}
		return resp, err
	})
}

// closeSignal is the SDK's request body with its WriteTo, reporting Close.
type closeSignal struct {
	io.ReadCloser
	o *ordering
}

func (b *closeSignal) WriteTo(w io.Writer) (int64, error) {
	return b.ReadCloser.(io.WriterTo).WriteTo(w)
}

func (b *closeSignal) Close() error {
	err := b.ReadCloser.Close()
	b.o.closeBodyOnce.Do(func() { close(b.o.bodyClosed) })
	return err
}

// heldConn holds the transport after it sent the request body (the write after the headers')
// until the body has been closed, then lets it make its extra copy.
type heldConn struct {
	net.Conn
	o *ordering
}

func (c *heldConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil && !bytes.HasPrefix(p, []byte("POST ")) {
		if err := c.o.await(c.o.bodyClosed); err != nil {
			return n, err
		}
	}
	return n, err
}

func (c *heldConn) Close() error {
	c.o.closeConnOnce.Do(func() { close(c.o.connClosed) })
	return c.Conn.Close()
}

// gatedBody waits before the first read of the answer until the transport is done with the
// request (and with the connection, when writing the request failed).
type gatedBody struct {
	io.ReadCloser
	o     *ordering
	ready bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if !b.ready {
		if err := b.o.await(b.o.wrote); err != nil {
			return 0, err
		}
		if b.o.wroteErr != nil {
			if err := b.o.await(b.o.connClosed); err != nil {
				return 0, err
			}
		}
		b.ready = true
	}
	return b.ReadCloser.Read(p)
}
