package meterstream

// Receiving alerts: verify a webhook's Standard Webhooks signature, then parse its CloudEvent.
// The same checks, in the same order, as every SDK (clients/vectors/webhooks.json).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WebhookTolerance is how far a webhook's timestamp may be from now (the Standard Webhooks
// default).
const WebhookTolerance = 5 * time.Minute

// WebhookErrorCode says why a webhook was refused.
type WebhookErrorCode string

// The reasons VerifyWebhook refuses a webhook, checked in this order.
const (
	WebhookInvalidSecret       WebhookErrorCode = "INVALID_SECRET"
	WebhookMissingHeader       WebhookErrorCode = "MISSING_HEADER"
	WebhookInvalidTimestamp    WebhookErrorCode = "INVALID_TIMESTAMP"
	WebhookTimestampTooOld     WebhookErrorCode = "TIMESTAMP_TOO_OLD"
	WebhookTimestampTooNew     WebhookErrorCode = "TIMESTAMP_TOO_NEW"
	WebhookNoMatchingSignature WebhookErrorCode = "NO_MATCHING_SIGNATURE"
	WebhookInvalidBody         WebhookErrorCode = "INVALID_BODY"
)

// ErrWebhookVerification is what every *WebhookError unwraps to (test with errors.Is).
var ErrWebhookVerification = errors.New("meterstream: webhook verification failed")

// WebhookError is the error VerifyWebhook returns: Code says why, Detail how. Answer the
// request with a 4xx.
type WebhookError struct {
	Code   WebhookErrorCode
	Detail string
}

func (e *WebhookError) Error() string {
	return fmt.Sprintf("meterstream: webhook refused: %s: %s", e.Code, e.Detail)
}

// Unwrap gives ErrWebhookVerification.
func (e *WebhookError) Unwrap() error { return ErrWebhookVerification }

// WebhookEvent is a notification of the alerts service: a CloudEvents 1.0 JSON object.
type WebhookEvent struct {
	SpecVersion string `json:"specversion"`
	// ID is the notification's id, also its webhook-id: the same on every retry.
	ID     string `json:"id"`
	Source string `json:"source"`
	// Type is e.g. io.meterstream.usage.threshold_reached (docs/alerts.md lists them).
	Type string `json:"type"`
	// Subject is the account, or "" (a health condition of the pipeline).
	Subject         string         `json:"subject,omitempty"`
	Time            string         `json:"time,omitempty"`
	DataContentType string         `json:"datacontenttype,omitempty"`
	Data            map[string]any `json:"data,omitempty"`
}

// WebhookOptions are VerifyWebhook's optional settings; the zero value is the defaults.
type WebhookOptions struct {
	// Now is the time to check the timestamp against (zero: time.Now()).
	Now time.Time
	// Tolerance is how far the timestamp may be from Now (zero: WebhookTolerance).
	Tolerance time.Duration
}

const secretPrefix = "whsec_"

var (
	standardBase64 = regexp.MustCompile(`^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$`)
	wholeSeconds   = regexp.MustCompile(`^[0-9]{1,15}$`)
	webhookHeaders = [...]string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}
)

func refuse(code WebhookErrorCode, format string, args ...any) error {
	return &WebhookError{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// VerifyWebhook verifies a webhook of the alerts service and returns its CloudEvent.
//
// webhook-signature must hold a "v1," signature (HMAC-SHA256, base64) of
// "<webhook-id>.<webhook-timestamp>.<body>" under the endpoint's whsec_ secret (any of its
// space-separated signatures, as during a rotation), compared in constant time; the timestamp
// must be within the tolerance of now, which stops replays. body is the request's body exactly
// as received. The error is a *WebhookError with the code of the first check that failed.
func VerifyWebhook(body []byte, header http.Header, secret string, options WebhookOptions) (*WebhookEvent, error) {
	encoded := strings.TrimPrefix(secret, secretPrefix)
	if encoded == "" || !standardBase64.MatchString(encoded) {
		return nil, refuse(WebhookInvalidSecret, "expected whsec_ and the standard base64 of a key")
	}
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(encoded, "="))
	if err != nil {
		return nil, refuse(WebhookInvalidSecret, "expected whsec_ and the standard base64 of a key")
	}
	var values [3]string
	var missing []string
	for i, name := range webhookHeaders {
		values[i] = header.Get(name)
		if values[i] == "" {
			missing = append(missing, strings.ToLower(name))
		}
	}
	if len(missing) > 0 {
		return nil, refuse(WebhookMissingHeader, "missing or empty: %s", strings.Join(missing, ", "))
	}
	id, stamp, signatures := values[0], values[1], values[2]
	if !wholeSeconds.MatchString(stamp) {
		if len(stamp) > 40 {
			stamp = stamp[:40]
		}
		return nil, refuse(WebhookInvalidTimestamp, "not whole seconds: %q", stamp)
	}
	seconds, _ := strconv.ParseInt(stamp, 10, 64) // at most 15 digits: fits
	now := options.Now
	if now.IsZero() {
		now = time.Now()
	}
	tolerance := options.Tolerance
	if tolerance == 0 {
		tolerance = WebhookTolerance
	}
	at := time.Unix(seconds, 0)
	if at.Before(now.Add(-tolerance)) {
		return nil, refuse(WebhookTimestampTooOld, "%d is over %s before now", seconds, tolerance)
	}
	if at.After(now.Add(tolerance)) {
		return nil, refuse(WebhookTimestampTooNew, "%d is over %s after now", seconds, tolerance)
	}
	if !utf8.Valid(body) {
		return nil, refuse(WebhookInvalidBody, "the body is not UTF-8")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, seconds)
	mac.Write(body)
	expected := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	matched := false
	for _, entry := range strings.Split(signatures, " ") {
		if strings.HasPrefix(entry, "v1,") && hmac.Equal([]byte(entry), expected) {
			matched = true
		}
	}
	if !matched {
		return nil, refuse(WebhookNoMatchingSignature, "no v1 signature of this body and secret")
	}
	return parseWebhookEvent(body)
}

// parseWebhookEvent reads the attributes by their exact names (encoding/json would also match
// other cases of them), so that every SDK refuses the same bodies.
func parseWebhookEvent(body []byte) (*WebhookEvent, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, refuse(WebhookInvalidBody, "not a JSON object: %v", err)
	}
	if doc == nil {
		return nil, refuse(WebhookInvalidBody, "not a JSON object")
	}
	event := &WebhookEvent{}
	required := []struct {
		name string
		into *string
	}{{"specversion", &event.SpecVersion}, {"id", &event.ID}, {"source", &event.Source}, {"type", &event.Type}}
	for _, attr := range required {
		if raw, ok := doc[attr.name]; !ok || json.Unmarshal(raw, attr.into) != nil || *attr.into == "" {
			return nil, refuse(WebhookInvalidBody, "%s is not a non-empty string", attr.name)
		}
	}
	if event.SpecVersion != "1.0" {
		return nil, refuse(WebhookInvalidBody, "specversion is not '1.0'")
	}
	optional := []struct {
		name     string
		into     any
		nullable bool
	}{
		{"subject", &event.Subject, true},
		{"time", &event.Time, false},
		{"datacontenttype", &event.DataContentType, false},
		{"data", &event.Data, true},
	}
	for _, attr := range optional {
		raw, ok := doc[attr.name]
		if !ok {
			continue
		}
		if string(raw) == "null" {
			if attr.nullable {
				continue
			}
			return nil, refuse(WebhookInvalidBody, "%s has the wrong type", attr.name)
		}
		if json.Unmarshal(raw, attr.into) != nil {
			return nil, refuse(WebhookInvalidBody, "%s has the wrong type", attr.name)
		}
	}
	return event, nil
}
