package meterstream_test

// Replays clients/vectors/ (the scenarios the Python, Node and Java clients replay too).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	meterstream "github.com/meterstream/meterstream/clients/go"
)

const vectors = "../vectors"

var userAgent = regexp.MustCompile(`^meterstream-go/\d+\.\d+\.\d+`)

var kinds = map[string]error{
	"authentication":    meterstream.ErrUnauthenticated,
	"permission":        meterstream.ErrForbidden,
	"not_found":         meterstream.ErrNotFound,
	"payload_too_large": meterstream.ErrPayloadTooLarge,
	"unprocessable":     meterstream.ErrUnprocessable,
	"retries_exhausted": meterstream.ErrRetriesExhausted,
	"api":               nil,
}

type file struct {
	BaseURL   string     `json:"base_url"`
	Token     string     `json:"token"`
	Scenarios []scenario `json:"scenarios"`
}

type scenario struct {
	Name   string `json:"name"`
	Client struct {
		BatchSize     int      `json:"batch_size"`
		MaxBatchBytes int      `json:"max_batch_bytes"`
		MaxAttempts   int      `json:"max_attempts"`
		BackoffS      *float64 `json:"backoff_s"`
		MaxBackoffS   *float64 `json:"max_backoff_s"`
	} `json:"client"`
	Random    []float64      `json:"random"`
	Call      map[string]any `json:"call"`
	Exchanges []exchange     `json:"exchanges"`
	Expect    map[string]any `json:"expect"`
}

type exchange struct {
	Request struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		Query   map[string]string `json:"query"`
		Headers map[string]string `json:"headers"`
		JSON    *json.RawMessage  `json:"json"`
		Body    *string           `json:"body"`
	} `json:"request"`
	Response struct {
		NetworkError bool              `json:"network_error"`
		Status       int               `json:"status"`
		Headers      map[string]string `json:"headers"`
		JSON         *json.RawMessage  `json:"json"`
		Body         string            `json:"body"`
	} `json:"response"`
}

func load(t *testing.T, name string, into any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		t.Fatal(err)
	}
}

// replay is a fake transport serving a scenario's exchanges in order, checking each request.
type replay struct {
	t         *testing.T
	token     string
	exchanges []exchange
	bodies    []string
}

func (r *replay) RoundTrip(req *http.Request) (*http.Response, error) {
	t := r.t
	if len(r.exchanges) == 0 {
		t.Fatalf("unexpected request %s %s", req.Method, req.URL)
	}
	ex := r.exchanges[0]
	r.exchanges = r.exchanges[1:]
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	r.bodies = append(r.bodies, string(body))
	want := ex.Request
	if req.Method != want.Method || req.URL.Path != want.Path {
		t.Fatalf("request %s %s, want %s %s", req.Method, req.URL.Path, want.Method, want.Path)
	}
	query := map[string]string{}
	for name, values := range req.URL.Query() {
		query[name] = values[0]
	}
	if want.Query == nil {
		want.Query = map[string]string{}
	}
	if !reflect.DeepEqual(query, want.Query) {
		t.Fatalf("query %v, want %v", query, want.Query)
	}
	if got := req.Header.Get("Authorization"); got != "Bearer "+r.token {
		t.Fatalf("authorization %q", got)
	}
	if got := req.Header.Get("User-Agent"); !userAgent.MatchString(got) {
		t.Fatalf("user-agent %q", got)
	}
	for name, value := range want.Headers {
		if got := req.Header.Get(name); got != value {
			t.Fatalf("header %s = %q, want %q", name, got, value)
		}
	}
	if want.JSON != nil {
		assertJSON(t, body, *want.JSON)
	}
	if want.Body != nil && string(body) != *want.Body {
		t.Fatalf("body %q, want %q", body, *want.Body)
	}
	answer := ex.Response
	if answer.NetworkError {
		return nil, errors.New("connection reset by the vector")
	}
	content := []byte(answer.Body)
	if answer.JSON != nil {
		content = *answer.JSON
	}
	header := http.Header{}
	for name, value := range answer.Headers {
		header.Set(name, value)
	}
	return &http.Response{
		StatusCode: answer.Status, Header: header, Request: req,
		Body: io.NopCloser(bytes.NewReader(content)), ContentLength: int64(len(content)),
	}, nil
}

func normal(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %s", data)
	}
	return v
}

func assertJSON(t *testing.T, got []byte, want []byte) {
	t.Helper()
	if g, w := normal(t, got), normal(t, want); !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs:\n got %s\nwant %s", got, want)
	}
}

func asJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func remarshal(t *testing.T, v any) []byte { return asJSON(t, v) }

func newClient(t *testing.T, doc file, s scenario, r *replay, extra func(*meterstream.Options)) (*meterstream.Client, *[]float64) {
	t.Helper()
	slept := []float64{}
	randoms := append([]float64(nil), s.Random...)
	seconds := func(v *float64) time.Duration {
		if v == nil {
			return 0
		}
		return time.Duration(*v * float64(time.Second))
	}
	options := meterstream.Options{
		BatchSize:     s.Client.BatchSize,
		MaxBatchBytes: s.Client.MaxBatchBytes,
		MaxAttempts:   s.Client.MaxAttempts,
		Backoff:       seconds(s.Client.BackoffS),
		MaxBackoff:    seconds(s.Client.MaxBackoffS),
		FlushInterval: -1,
		HTTPClient:    &http.Client{Transport: r},
		Sleep: func(_ context.Context, d time.Duration) error {
			slept = append(slept, d.Seconds())
			return nil
		},
		Random: func() float64 {
			if len(randoms) == 0 {
				t.Fatal("the scenario has no more random values")
			}
			v := randoms[0]
			randoms = randoms[1:]
			return v
		},
	}
	if extra != nil {
		extra(&options)
	}
	c, err := meterstream.New(doc.BaseURL, doc.Token, options)
	if err != nil {
		t.Fatal(err)
	}
	return c, &slept
}

func checkError(t *testing.T, err error, want map[string]any) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	var apiErr *meterstream.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("%T %v is not an *APIError", err, err)
	}
	kind := kinds[want["kind"].(string)]
	if kind == nil {
		if apiErr.Unwrap() != nil {
			t.Fatalf("error %v is a %v, want a plain APIError", err, apiErr.Unwrap())
		}
	} else if !errors.Is(err, kind) {
		t.Fatalf("error %v is not %v", err, kind)
	}
	status := 0
	if s, ok := want["status"].(float64); ok {
		status = int(s)
	}
	if apiErr.Status != status {
		t.Fatalf("status %d, want %d", apiErr.Status, status)
	}
	if code, ok := want["code"]; ok && apiErr.Code != code {
		t.Fatalf("code %q, want %q", apiErr.Code, code)
	}
	if detail, ok := want["detail"]; ok && apiErr.Detail != detail {
		t.Fatalf("detail %q, want %q", apiErr.Detail, detail)
	}
}

func checkSleeps(t *testing.T, got []float64, want any) {
	t.Helper()
	var expected []float64
	if want != nil {
		for _, v := range want.([]any) {
			expected = append(expected, v.(float64))
		}
	}
	if len(got) != len(expected) {
		t.Fatalf("sleeps %v, want %v", got, expected)
	}
	for i := range got {
		if math.Abs(got[i]-expected[i]) > 1e-6 {
			t.Fatalf("sleeps %v, want %v", got, expected)
		}
	}
}

func events(t *testing.T, call map[string]any) []meterstream.Event {
	var out []meterstream.Event
	if err := json.Unmarshal(remarshal(t, call["events"]), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// batchJSON is a BatchResult as the vectors write it (no detail for failed events).
func batchJSON(t *testing.T, r *meterstream.BatchResult) []byte {
	copied := *r
	copied.Results = append([]meterstream.EventResult(nil), r.Results...)
	for i := range copied.Results {
		if copied.Results[i].Status == "failed" {
			copied.Results[i].Detail = ""
		}
	}
	return asJSON(t, copied)
}

func TestEventsVectors(t *testing.T) {
	var doc struct {
		UUIDPattern string `json:"uuid_pattern"`
		Cases       []struct {
			Name  string `json:"name"`
			Input struct {
				Meter   string         `json:"meter"`
				Account string         `json:"account"`
				Data    map[string]any `json:"data"`
				ID      string         `json:"id"`
				Time    string         `json:"time"`
				Source  string         `json:"source"`
			} `json:"input"`
			Event map[string]any `json:"event"`
			ID    string         `json:"id"`
		} `json:"cases"`
	}
	load(t, "events.json", &doc)
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			at, err := time.Parse(time.RFC3339Nano, c.Input.Time)
			if err != nil {
				t.Fatal(err)
			}
			options := []meterstream.EventOption{meterstream.WithTime(at)}
			if c.Input.ID != "" {
				options = append(options, meterstream.WithID(c.Input.ID))
			}
			if c.Input.Source != "" {
				options = append(options, meterstream.WithSource(c.Input.Source))
			}
			event := meterstream.NewEvent(c.Input.Meter, c.Input.Account, c.Input.Data, options...)
			got := normal(t, asJSON(t, event)).(map[string]any)
			if c.ID == "uuid" {
				if !regexp.MustCompile(doc.UUIDPattern).MatchString(got["id"].(string)) {
					t.Fatalf("id %q is not a UUID v4", got["id"])
				}
				delete(got, "id")
			}
			assertJSON(t, asJSON(t, got), asJSON(t, c.Event))
		})
	}
}

func TestSendVectors(t *testing.T) {
	var doc file
	load(t, "send.json", &doc)
	for _, s := range doc.Scenarios {
		s := s
		t.Run(s.Name, func(t *testing.T) {
			r := &replay{t: t, token: doc.Token, exchanges: s.Exchanges}
			c, slept := newClient(t, doc, s, r, nil)
			result, err := c.SendBatch(context.Background(), events(t, s.Call))
			if want, ok := s.Expect["error"]; ok {
				checkError(t, err, want.(map[string]any))
			} else if err != nil {
				t.Fatal(err)
			} else {
				assertJSON(t, batchJSON(t, result), asJSON(t, s.Expect["result"]))
			}
			checkSleeps(t, *slept, s.Expect["sleeps_s"])
			for _, b := range r.bodies {
				if b != r.bodies[0] {
					t.Fatal("a retry must send the same bytes")
				}
			}
			if len(r.exchanges) != 0 {
				t.Fatalf("%d exchanges never asked for", len(r.exchanges))
			}
		})
	}
}

func TestBatchingVectors(t *testing.T) {
	var doc file
	load(t, "batching.json", &doc)
	for _, s := range doc.Scenarios {
		s := s
		t.Run(s.Name, func(t *testing.T) {
			r := &replay{t: t, token: doc.Token, exchanges: s.Exchanges}
			var reported []meterstream.BatchResult
			c, _ := newClient(t, doc, s, r, func(o *meterstream.Options) {
				o.OnResult = func(b meterstream.BatchResult) { reported = append(reported, b) }
			})
			ctx := context.Background()
			var err error
			for _, e := range events(t, s.Call) {
				if _, err = c.Add(ctx, e); err != nil {
					break
				}
			}
			if err == nil {
				if s.Call["then"] == "close" {
					err = c.Close(ctx)
				} else {
					_, err = c.Flush(ctx)
				}
			}
			if want, ok := s.Expect["error"]; ok {
				checkError(t, err, want.(map[string]any))
			} else if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			for _, b := range r.bodies {
				var batch []any
				if err := json.Unmarshal([]byte(b), &batch); err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(batch))
			}
			if got, want := fmt.Sprint(sizes), fmt.Sprint(s.Expect["batches"]); got != want {
				t.Fatalf("batches %s, want %s", got, want)
			}
			if want, ok := s.Expect["reported"]; ok {
				var got []json.RawMessage
				for i := range reported {
					if reported[i].Err == nil {
						t.Fatal("a failed batch is reported with its error")
					}
					got = append(got, batchJSON(t, &reported[i]))
				}
				assertJSON(t, asJSON(t, got), asJSON(t, want))
			}
			if len(r.exchanges) != 0 {
				t.Fatalf("%d exchanges never asked for", len(r.exchanges))
			}
		})
	}
}

func TestReadsVectors(t *testing.T) {
	var doc file
	load(t, "reads.json", &doc)
	for _, s := range doc.Scenarios {
		s := s
		t.Run(s.Name, func(t *testing.T) {
			r := &replay{t: t, token: doc.Token, exchanges: s.Exchanges}
			c, slept := newClient(t, doc, s, r, nil)
			f := s.Call["filters"].(map[string]any)
			str := func(name string) string { v, _ := f[name].(string); return v }
			limit := 0
			if v, ok := f["limit"].(float64); ok {
				limit = int(v)
			}
			ctx := context.Background()
			var rows any
			var err error
			if s.Call["op"] == "usage" {
				rows, err = c.Usage(ctx, meterstream.UsageFilter{
					Account: str("account"), Meter: str("meter"),
					PeriodFrom: str("period_from"), PeriodTo: str("period_to"), Limit: limit,
				}).All()
			} else {
				filter := meterstream.RejectionFilter{Account: str("account"), Reason: str("reason"), Limit: limit}
				if v := str("since"); v != "" {
					filter.Since, _ = time.Parse(time.RFC3339, v)
				}
				if v := str("until"); v != "" {
					filter.Until, _ = time.Parse(time.RFC3339, v)
				}
				rows, err = c.Rejections(ctx, filter).All()
			}
			if want, ok := s.Expect["error"]; ok {
				checkError(t, err, want.(map[string]any))
			} else if err != nil {
				t.Fatal(err)
			} else {
				got := asJSON(t, rows)
				if string(got) == "null" {
					got = []byte("[]")
				}
				assertJSON(t, got, asJSON(t, s.Expect["items"]))
			}
			checkSleeps(t, *slept, s.Expect["sleeps_s"])
			if len(r.exchanges) != 0 {
				t.Fatalf("%d exchanges never asked for", len(r.exchanges))
			}
		})
	}
}

func TestUploadVectors(t *testing.T) {
	var doc file
	load(t, "uploads.json", &doc)
	for _, s := range doc.Scenarios {
		s := s
		t.Run(s.Name, func(t *testing.T) {
			r := &replay{t: t, token: doc.Token, exchanges: s.Exchanges}
			c, slept := newClient(t, doc, s, r, nil)
			path := filepath.Join(t.TempDir(), s.Call["filename"].(string))
			if err := os.WriteFile(path, []byte(s.Call["content"].(string)), 0o600); err != nil {
				t.Fatal(err)
			}
			format, _ := s.Call["format"].(string)
			var last [2]int64
			status, err := c.Upload(context.Background(), path, meterstream.UploadOptions{
				Format: format, UploadID: s.Call["upload_id"].(string),
				Progress: func(sent, size int64) { last = [2]int64{sent, size} },
			})
			if want, ok := s.Expect["error"]; ok {
				checkError(t, err, want.(map[string]any))
			} else if err != nil {
				t.Fatal(err)
			} else {
				assertJSON(t, asJSON(t, status), asJSON(t, s.Expect["status"]))
				if got, want := fmt.Sprint(last[:]), fmt.Sprint(s.Expect["progress_last"]); got != want {
					t.Fatalf("last progress %s, want %s", got, want)
				}
				checkSleeps(t, *slept, s.Expect["sleeps_s"])
			}
			if len(r.exchanges) != 0 {
				t.Fatalf("%d exchanges never asked for", len(r.exchanges))
			}
		})
	}
}

type webhookCase struct {
	Name       string            `json:"name"`
	Secret     string            `json:"secret"`
	Now        int64             `json:"now"`
	ToleranceS *float64          `json:"tolerance_s"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body"`
	BodyBase64 *string           `json:"body_base64"`
	Expect     struct {
		Event *json.RawMessage `json:"event"`
		Error string           `json:"error"`
	} `json:"expect"`
}

func TestWebhookVectors(t *testing.T) {
	var doc struct {
		Cases []webhookCase `json:"cases"`
	}
	load(t, "webhooks.json", &doc)
	for _, c := range doc.Cases {
		c := c
		t.Run(c.Name, func(t *testing.T) {
			var body []byte
			if c.BodyBase64 != nil {
				var err error
				if body, err = base64.StdEncoding.DecodeString(*c.BodyBase64); err != nil {
					t.Fatal(err)
				}
			} else {
				body = []byte(*c.Body)
			}
			header := http.Header{}
			for name, value := range c.Headers {
				header.Set(name, value)
			}
			options := meterstream.WebhookOptions{Now: time.Unix(c.Now, 0)}
			if c.ToleranceS != nil {
				options.Tolerance = time.Duration(*c.ToleranceS * float64(time.Second))
			}
			event, err := meterstream.VerifyWebhook(body, header, c.Secret, options)
			if c.Expect.Event != nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// The struct leaves out what is null or empty; so does the comparison.
				want := normal(t, *c.Expect.Event).(map[string]any)
				for name, value := range want {
					if value == nil {
						delete(want, name)
					}
				}
				if got := normal(t, asJSON(t, event)); !reflect.DeepEqual(got, want) {
					t.Fatalf("event\n got %v\nwant %v", got, want)
				}
				return
			}
			var refused *meterstream.WebhookError
			if !errors.As(err, &refused) || !errors.Is(err, meterstream.ErrWebhookVerification) {
				t.Fatalf("error %T %v, want a *WebhookError", err, err)
			}
			if string(refused.Code) != c.Expect.Error || refused.Detail == "" {
				t.Fatalf("code %s (%s), want %s", refused.Code, refused.Detail, c.Expect.Error)
			}
		})
	}
}
