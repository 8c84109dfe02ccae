package meterstream_test

// The Go client's own behaviour beyond the shared vectors: the timer, TLS, contexts, the
// webhook check's default clock.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	meterstream "github.com/meterstream/meterstream/clients/go"
)

func acceptAll(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var events []map[string]any
	_ = json.Unmarshal(body, &events)
	results := make([]map[string]any, len(events))
	for i, e := range events {
		results[i] = map[string]any{"index": i, "id": e["id"], "status": "accepted"}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(202)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"accepted": len(events), "rejected": 0, "failed": 0, "results": results,
	})
}

func TestTimerSendsWhatIsBufferedWithoutFlush(t *testing.T) {
	arrived := make(chan int, 3)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var events []any
		_ = json.Unmarshal(body, &events)
		arrived <- len(events)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		acceptAll(w, r)
	}))
	defer server.Close()
	var mu sync.Mutex
	var reported []meterstream.BatchResult
	c, err := meterstream.New(server.URL, "ms_x", meterstream.Options{
		FlushInterval: 20 * time.Millisecond,
		OnResult: func(b meterstream.BatchResult) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, b)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := c.Add(ctx, meterstream.NewEvent("api_calls", "acct-1", map[string]any{"i": i})); err != nil {
			t.Fatal(err)
		}
	}
	for sent := 0; sent < 3; { // one batch, or more if adding took longer than the interval
		sent += <-arrived
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, r := range reported {
		accepted += r.Accepted
	}
	if accepted != 3 {
		t.Fatalf("reported %+v", reported)
	}
}

func TestTimerFailureIsReportedAndReturnedByTheNextFlush(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(403)
		_, _ = w.Write([]byte(`{"error":"FORBIDDEN","detail":"no scope"}`))
	}))
	defer server.Close()
	done := make(chan meterstream.BatchResult, 1)
	c, _ := meterstream.New(server.URL, "ms_x", meterstream.Options{
		FlushInterval: 10 * time.Millisecond,
		OnResult:      func(b meterstream.BatchResult) { done <- b },
	})
	ctx := context.Background()
	if _, err := c.Add(ctx, meterstream.NewEvent("api_calls", "acct-1", nil, meterstream.WithID("e-1"))); err != nil {
		t.Fatal(err)
	}
	result := <-done
	if _, err := c.Flush(ctx); !errors.Is(err, meterstream.ErrForbidden) {
		t.Fatalf("flush: %v, want ErrForbidden", err)
	}
	if result.Failed != 1 || *result.Results[0].ID != "e-1" || result.Results[0].Status != "failed" {
		t.Fatalf("reported %+v", result)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("the error is returned once, then %v", err)
	}
}

func TestPrivateCAIsTrustedAndNothingElse(t *testing.T) {
	agents := make(chan string, 10)
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agents <- r.Header.Get("User-Agent")
		acceptAll(w, r)
	}))
	defer server.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	ctx := context.Background()
	events := []meterstream.Event{meterstream.NewEvent("api_calls", "acct-1", nil)}

	trusting, err := meterstream.New(server.URL, "ms_x", meterstream.Options{CACertPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	result, err := trusting.SendBatch(ctx, events)
	if err != nil || result.Accepted != 1 {
		t.Fatalf("%+v %v", result, err)
	}
	if agent := <-agents; !strings.HasPrefix(agent, "meterstream-go/"+meterstream.Version) {
		t.Fatalf("user-agent %q", agent)
	}
	plain, _ := meterstream.New(server.URL, "ms_x", meterstream.Options{MaxAttempts: 1})
	if _, err := plain.SendBatch(ctx, events); !errors.Is(err, meterstream.ErrRetriesExhausted) {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if _, err := meterstream.New(server.URL, "ms_x", meterstream.Options{CACertPEM: []byte("nope")}); err == nil {
		t.Fatal("a CA that is not PEM must be refused")
	}
}

func TestCancelledContextStopsTheRetries(t *testing.T) {
	first := make(chan struct{})
	var once sync.Once
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(first) })
		w.WriteHeader(503)
	}))
	defer server.Close()
	c, _ := meterstream.New(server.URL, "ms_x", meterstream.Options{Backoff: time.Hour, MaxBackoff: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-first
		cancel()
	}()
	_, err := c.SendBatch(ctx, []meterstream.Event{meterstream.NewEvent("api_calls", "acct-1", nil)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
}

func TestSizeFlushBeforeTheTimerLeavesNothingToWaitFor(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(acceptAll))
	defer server.Close()
	c, _ := meterstream.New(server.URL, "ms_x", meterstream.Options{BatchSize: 2, FlushInterval: time.Hour})
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		if _, err := c.Add(ctx, meterstream.NewEvent("api_calls", "acct-1", nil)); err != nil {
			t.Fatal(err)
		}
	}
	finished := make(chan error, 1)
	go func() { finished <- c.Close(ctx) }()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for a timer that was stopped")
	}
}

func TestVerifyWebhookChecksTheClockWhenNoNowIsGiven(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	body := []byte(`{"specversion":"1.0","id":"n-1","source":"/meterstream/alerts","type":"io.meterstream.endpoint.test"}`)
	signed := func(seconds int64) http.Header {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "n-1.%d.%s", seconds, body)
		header := http.Header{}
		header.Set("webhook-id", "n-1")
		header.Set("webhook-timestamp", strconv.FormatInt(seconds, 10))
		header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		return header
	}
	now := time.Now().Unix()

	if event, err := meterstream.VerifyWebhook(body, signed(now), secret, meterstream.WebhookOptions{}); err != nil || event.ID != "n-1" {
		t.Fatalf("event %v, error %v", event, err)
	}
	_, err := meterstream.VerifyWebhook(body, signed(now-3600), secret, meterstream.WebhookOptions{})
	var refused *meterstream.WebhookError
	if !errors.As(err, &refused) || refused.Code != meterstream.WebhookTimestampTooOld {
		t.Fatalf("error %v, want TIMESTAMP_TOO_OLD", err)
	}
}
