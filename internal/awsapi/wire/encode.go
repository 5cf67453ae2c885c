package wire

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"reflect"
	"sync"

	"github.com/moatlb/moat/internal/testcheck"
)

// Namespaces of the services' replies.
const (
	ELBv2Namespace = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
	EC2Namespace   = "http://ec2.amazonaws.com/doc/2016-11-15/"
	STSNamespace   = "https://sts.amazonaws.com/doc/2011-06-15/"
)

// Members is an awsQuery list: <Name><member>…</member></Name>. The element is written even when
// the list is empty (<Name></Name>), which the SDKs read as an empty list; tag the field omitempty
// to leave an empty list out.
type Members[T any] []T

func (m Members[T]) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return encodeList(e, start, "member", m)
}

// Items is an ec2Query list: <name><item>…</item></name>, written like Members.
type Items[T any] []T

func (m Items[T]) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return encodeList(e, start, "item", m)
}

func encodeList[T any](e *xml.Encoder, start xml.StartElement, item string, list []T) error {
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	for _, v := range list {
		if err := e.EncodeElement(v, xml.StartElement{Name: xml.Name{Local: item}}); err != nil {
			return err
		}
	}
	return e.EncodeToken(start.End())
}

// QueryReply returns the encoder of an awsQuery service's successes in namespace:
// <ActionResponse><ActionResult>result</ActionResult><ResponseMetadata><RequestId/>
// </ResponseMetadata></ActionResponse>. The SDK requires the Result element even for operations
// without output, so a nil result still writes it.
func QueryReply(namespace string) func(action, requestID string, result any) ([]byte, error) {
	return func(action, requestID string, result any) ([]byte, error) {
		return queryReply(namespace, action, requestID, result)
	}
}

func queryReply(namespace, action, requestID string, result any) ([]byte, error) {
	buf := replyBuffers.Get().(*bytes.Buffer)
	defer putReplyBuffer(buf)
	buf.WriteString("<" + action + "Response xmlns=\"")
	escapeText(buf, namespace)
	buf.WriteString("\">")
	openTag(buf, action+"Result")
	if result != nil && !appendFields(buf, reflect.ValueOf(result)) {
		return xmlQueryReply(namespace, action, requestID, result)
	}
	closeTag(buf, action+"Result")
	buf.WriteString("<ResponseMetadata><RequestId>")
	escapeText(buf, requestID)
	buf.WriteString("</RequestId></ResponseMetadata></" + action + "Response>")
	return checkedReply(bytes.Clone(buf.Bytes()), func() ([]byte, error) { return xmlQueryReply(namespace, action, requestID, result) })
}

// replyBuffers hold replies as they are written; the reply itself is a copy of the exact size.
var replyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledReply keeps the rare huge reply's buffer out of the pool.
const maxPooledReply = 64 << 10

func putReplyBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledReply {
		buf.Reset()
		replyBuffers.Put(buf)
	}
}

// checkedReply returns the directly encoded reply; in tests, only after checking that
// encoding/xml writes the same bytes, so that the API suite holds the direct encoder to it.
func checkedReply(direct []byte, viaEncodingXML func() ([]byte, error)) ([]byte, error) {
	if !testcheck.Enabled() {
		return direct, nil
	}
	want, err := viaEncodingXML()
	if err != nil {
		panic(fmt.Sprintf("wire: encoding/xml fails on a reply the direct encoder wrote: %v", err))
	}
	if !bytes.Equal(direct, want) {
		panic(fmt.Sprintf("wire: the direct encoder wrote\n%s\nwhere encoding/xml writes\n%s", direct, want))
	}
	return direct, nil
}

// xmlQueryReply is queryReply through encoding/xml, for shapes the direct encoder does not know.
func xmlQueryReply(namespace, action, requestID string, result any) ([]byte, error) {
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	root := xml.StartElement{
		Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: namespace}},
	}
	resultStart := xml.StartElement{Name: xml.Name{Local: action + "Result"}}
	if err := e.EncodeToken(root); err != nil {
		return nil, err
	}
	if result == nil {
		if err := e.EncodeToken(resultStart); err != nil {
			return nil, err
		}
		if err := e.EncodeToken(resultStart.End()); err != nil {
			return nil, err
		}
	} else if err := e.EncodeElement(result, resultStart); err != nil {
		return nil, err
	}
	meta := struct {
		RequestID string `xml:"RequestId"`
	}{requestID}
	if err := e.EncodeElement(meta, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}}); err != nil {
		return nil, err
	}
	if err := e.EncodeToken(root.End()); err != nil {
		return nil, err
	}
	if err := e.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// EC2Reply encodes an ec2Query success: a flat <ActionResponse> holding <requestId> and then the
// fields of result (a struct whose fields carry lowerCamel xml tags).
func EC2Reply(action, requestID string, result any) ([]byte, error) {
	buf := replyBuffers.Get().(*bytes.Buffer)
	defer putReplyBuffer(buf)
	buf.WriteString(xml.Header)
	buf.WriteString("<" + action + "Response xmlns=\"" + EC2Namespace + "\"><requestId>")
	escapeText(buf, requestID)
	buf.WriteString("</requestId>")
	if result != nil && !appendFields(buf, reflect.ValueOf(result)) {
		return xmlEC2Reply(action, requestID, result)
	}
	buf.WriteString("</" + action + "Response>")
	return checkedReply(bytes.Clone(buf.Bytes()), func() ([]byte, error) { return xmlEC2Reply(action, requestID, result) })
}

// xmlEC2Reply is EC2Reply through encoding/xml, for shapes the direct encoder does not know.
func xmlEC2Reply(action, requestID string, result any) ([]byte, error) {
	// Encoding the struct under a throwaway element and keeping its inside puts its fields at the
	// top level next to requestId, where the SDK looks for them.
	var inner []byte
	if result != nil {
		raw, err := xml.Marshal(struct {
			XMLName xml.Name `xml:"x"`
			Body    any
		}{Body: result})
		if err != nil {
			return nil, err
		}
		inner = bytes.TrimSuffix(bytes.TrimPrefix(raw, []byte("<x><Body>")), []byte("</Body></x>"))
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	buf.WriteString("<" + action + "Response xmlns=\"" + EC2Namespace + "\"><requestId>")
	if err := xml.EscapeText(&buf, []byte(requestID)); err != nil {
		return nil, err
	}
	buf.WriteString("</requestId>")
	buf.Write(inner)
	buf.WriteString("</" + action + "Response>")
	return buf.Bytes(), nil
}

// QueryError encodes an awsQuery service's error in namespace. fault is "Sender" for client
// errors, "Receiver" for ours.
func QueryError(namespace, code, message, fault, requestID string) []byte {
	body, _ := xml.Marshal(struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Xmlns   string   `xml:"xmlns,attr"`
		Error   struct {
			Type    string
			Code    string
			Message string
		}
		RequestID string `xml:"RequestId"`
	}{Xmlns: namespace, Error: struct{ Type, Code, Message string }{fault, code, message}, RequestID: requestID})
	return body
}

// EC2Error encodes an ec2Query error: <Response><Errors><Error>…</Error></Errors><RequestID>.
func EC2Error(code, message, requestID string) []byte {
	body, _ := xml.Marshal(struct {
		XMLName xml.Name `xml:"Response"`
		Errors  struct {
			Error struct{ Code, Message string }
		}
		RequestID string `xml:"RequestID"`
	}{Errors: struct {
		Error struct{ Code, Message string }
	}{struct{ Code, Message string }{code, message}}, RequestID: requestID})
	return append([]byte(xml.Header), body...)
}

// ContentType is the Content-Type of every reply, as AWS sends it.
const ContentType = "text/xml;charset=UTF-8"

// Write sends an XML reply with AWS's headers.
func Write(w http.ResponseWriter, status int, requestID string, body []byte) {
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("x-amzn-RequestId", requestID)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
