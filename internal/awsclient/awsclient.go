// Package awsclient holds what moat's aws-sdk-go-v2 clients share, whichever endpoint they call
// (moat lb or AWS).
package awsclient

import (
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// HTTPClient returns c (a new default SDK client when nil) sending request bodies that offer
// only Read and Close.
//
// Why: smithy-go closes a request's body as soon as the response's headers are in, and the body
// then answers WriteTo with io.EOF. net/http's transport, once it has sent Content-Length bytes,
// copies the body once more (to find bytes beyond that length) with io.Copy, which prefers
// WriteTo. When the server answered in between, that copy fails with io.EOF, the transport takes
// it for a broken request body and closes the connection while the caller still reads the
// response: "failed to decode response body ... use of closed network connection" on a call the
// server carried out (aws-sdk-go-v2 #1825, #2737). A retry then repeats a mutation that was
// made (an AuthorizeSecurityGroupIngress answers InvalidPermission.Duplicate). Read after Close
// answers io.EOF, which io.Copy takes for the end, as it is.
//
// Wrap the client after config.LoadDefaultConfig has built it, so that options which need the
// SDK's own client type (a custom CA bundle) still apply.
func HTTPClient(c aws.HTTPClient) aws.HTTPClient {
	if c == nil {
		c = awshttp.NewBuildableClient()
	}
	return readOnlyBodies{c}
}

type readOnlyBodies struct{ aws.HTTPClient }

func (c readOnlyBodies) Do(req *http.Request) (*http.Response, error) {
	if _, ok := req.Body.(io.WriterTo); ok {
		r := *req
		r.Body = readCloser{req.Body}
		req = &r
	}
	return c.HTTPClient.Do(req)
}

// readCloser hides every method of its ReadCloser but Read and Close.
type readCloser struct{ io.ReadCloser }
