package meterstream

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
)

// Event is a CloudEvents 1.0 usage event in structured JSON mode.
type Event struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`    // the meter
	Subject         string         `json:"subject"` // the account
	Time            string         `json:"time"`    // RFC 3339, UTC, milliseconds
	DataContentType string         `json:"datacontenttype"`
	Data            map[string]any `json:"data"`
}

// EventOption sets an optional attribute of NewEvent.
type EventOption func(*Event)

// WithID sets the idempotency key (a new random UUID otherwise).
func WithID(id string) EventOption { return func(e *Event) { e.ID = id } }

// WithTime sets when the usage happened (now otherwise).
func WithTime(t time.Time) EventOption { return func(e *Event) { e.Time = formatTime(t) } }

// WithSource names the producing system ("meterstream-client" otherwise).
func WithSource(source string) EventOption { return func(e *Event) { e.Source = source } }

// NewEvent makes a usage event for meter and account. Its id is fixed when it is made, so
// sending it again (a retry) can never count it twice.
func NewEvent(meter, account string, data map[string]any, options ...EventOption) Event {
	e := Event{
		SpecVersion:     "1.0",
		Source:          "meterstream-client",
		Type:            meter,
		Subject:         account,
		Time:            formatTime(time.Now()),
		DataContentType: "application/json",
		Data:            data,
	}
	for _, option := range options {
		option(&e)
	}
	if e.ID == "" {
		e.ID = newUUID()
	}
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	return e
}

func formatTime(t time.Time) string {
	return t.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z")
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// encode is an event's compact JSON, as it goes into a batch (no HTML escaping, like the
// other SDKs, so that every SDK counts the same bytes).
func encode(e Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
