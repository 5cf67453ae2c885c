package wire

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// JSONContentType is the Content-Type of the awsJson1_1 protocol (ACM, Shield), both ways.
const JSONContentType = "application/x-amz-json-1.1"

// EpochSeconds is an awsJson timestamp: seconds since the Unix epoch as a JSON number, with
// milliseconds as its fraction.
type EpochSeconds time.Time

func (t EpochSeconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(t).UnixMilli())/1000, 'f', -1, 64), nil
}

// Epoch returns t as an EpochSeconds, or nil for the zero time, so that omitempty leaves it out.
func Epoch(t time.Time) *EpochSeconds {
	if t.IsZero() {
		return nil
	}
	e := EpochSeconds(t)
	return &e
}

// JSONError encodes an awsJson error body. The SDKs read the code from __type (or from the
// x-amzn-ErrorType header that WriteJSON sets with it) and the message from message.
func JSONError(code, message string) []byte {
	body, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message,omitempty"`
	}{code, message})
	return body
}

// WriteJSON sends an awsJson reply; errorCode, for an error, also goes in x-amzn-ErrorType.
func WriteJSON(w http.ResponseWriter, status int, requestID, errorCode string, body []byte) {
	w.Header().Set("Content-Type", JSONContentType)
	w.Header().Set("x-amzn-RequestId", requestID)
	if errorCode != "" {
		w.Header().Set("x-amzn-ErrorType", errorCode)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
