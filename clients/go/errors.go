package meterstream

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Errors to test with errors.Is: a refusal by the API (by status), or retries that ran out.
var (
	ErrUnauthenticated  = errors.New("meterstream: token missing, malformed, unknown or revoked (401)")
	ErrForbidden        = errors.New("meterstream: the token lacks the route's scope (403)")
	ErrNotFound         = errors.New("meterstream: not found in your organisation (404)")
	ErrPayloadTooLarge  = errors.New("meterstream: too many events or bytes in one request (413)")
	ErrUnprocessable    = errors.New("meterstream: unprocessable request (422)")
	ErrRetriesExhausted = errors.New("meterstream: retries exhausted")
)

var byStatus = map[int]error{
	401: ErrUnauthenticated,
	403: ErrForbidden,
	404: ErrNotFound,
	413: ErrPayloadTooLarge,
	422: ErrUnprocessable,
}

// APIError is every error the client returns for an answer of the API (or for retries that
// ran out). Code and Detail are the API's error document's; Status is 0 when no answer came.
type APIError struct {
	Op     string
	Status int
	Code   string
	Detail string
	Body   []byte
	kind   error
	cause  error
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s: %v (last: %v)", e.Op, e.kind, e.cause)
	}
	body := string(e.Body)
	if len(body) > 500 {
		body = body[:500]
	}
	return fmt.Sprintf("%s: %d %s", e.Op, e.Status, body)
}

// Unwrap gives the sentinel error of the status (ErrNotFound, ...), or nil for another one.
func (e *APIError) Unwrap() error { return e.kind }

// Cause is the last network error when retries ran out without an answer.
func (e *APIError) Cause() error { return e.cause }

func refused(op string, status int, body []byte) *APIError {
	e := &APIError{Op: op, Status: status, Body: body, kind: byStatus[status]}
	var doc struct {
		Error  any `json:"error"`
		Detail any `json:"detail"`
	}
	if json.Unmarshal(body, &doc) == nil {
		e.Code, _ = doc.Error.(string)
		e.Detail, _ = doc.Detail.(string)
	}
	return e
}
