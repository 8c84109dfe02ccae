// Package meterstream is a client for meterstream's ingest API: it batches usage events and
// sends them, resending the same bytes on 429, 502-504 and network errors; reads usage and
// rejections page by page; uploads files resumably. Same rules as the Python client
// (meterstream.client); clients/vectors/ holds the scenarios both replay.
package meterstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version is this SDK's version, sent in the User-Agent.
const Version = "0.1.0"

// The API's limits per request (api.max_events_per_request, api.max_request_bytes).
const (
	MaxBatchEvents = 1000
	MaxBatchBytes  = 512 * 1024
)

const batchType = "application/cloudevents-batch+json"

// UserAgent names the SDK and its version.
var UserAgent = "meterstream-go/" + Version + " (" + runtime.Version() + ")"

func retryable(status int) bool {
	return status == 429 || status == 502 || status == 503 || status == 504
}

// Options of a Client; the zero value of a field means its default.
type Options struct {
	BatchSize     int           // events per request, at most 1,000 (default)
	MaxBatchBytes int           // bytes per request body, at most 512 KB (default)
	FlushInterval time.Duration // send what is buffered this long after the first event; default 1 s, < 0: never
	MaxAttempts   int           // default 8
	Backoff       time.Duration // first backoff, doubling per attempt with jitter; default 500 ms
	MaxBackoff    time.Duration // default 30 s
	Timeout       time.Duration // per request (uploads have none); default 60 s
	CACertPEM     []byte        // PEM certificates of a private CA to trust for https
	HTTPClient    *http.Client  // default: one with its own transport (and the CA)
	OnResult      func(BatchResult)
	Sleep         func(ctx context.Context, d time.Duration) error
	Random        func() float64
}

// EventResult is what the API said about one event of a batch.
type EventResult struct {
	Index  int     `json:"index"`
	ID     *string `json:"id"`
	Status string  `json:"status"` // accepted, rejected or failed
	Reason string  `json:"reason,omitempty"`
	Detail string  `json:"detail,omitempty"`
}

// BatchResult is one batch's outcome. Failed events were not sent (Err says why): send them again.
type BatchResult struct {
	Accepted int           `json:"accepted"`
	Rejected int           `json:"rejected"`
	Failed   int           `json:"failed"`
	Results  []EventResult `json:"results"`
	Err      error         `json:"-"`
}

type buffered struct {
	id  string
	raw []byte
}

// Client sends events (batched), reads usage and rejections, uploads files. It is safe for
// concurrent use. Close it to send what is buffered.
type Client struct {
	baseURL       string
	token         string
	http          *http.Client
	batchSize     int
	maxBatchBytes int
	flushInterval time.Duration
	maxAttempts   int
	backoff       time.Duration
	maxBackoff    time.Duration
	timeout       time.Duration
	onResult      func(BatchResult)
	sleep         func(ctx context.Context, d time.Duration) error
	random        func() float64

	mu          sync.Mutex
	buffer      []buffered
	bufferBytes int
	timer       *time.Timer
	background  sync.WaitGroup
	deferred    error
}

// New makes a client for the API at baseURL (e.g. "http://127.0.0.1:18080") with a token.
func New(baseURL, token string, options Options) (*Client, error) {
	c := &Client{
		baseURL:       strings.TrimRight(baseURL, "/"),
		token:         token,
		http:          options.HTTPClient,
		batchSize:     or(options.BatchSize, MaxBatchEvents),
		maxBatchBytes: or(options.MaxBatchBytes, MaxBatchBytes),
		flushInterval: or(options.FlushInterval, time.Second),
		maxAttempts:   or(options.MaxAttempts, 8),
		backoff:       or(options.Backoff, 500*time.Millisecond),
		maxBackoff:    or(options.MaxBackoff, 30*time.Second),
		timeout:       or(options.Timeout, 60*time.Second),
		onResult:      options.OnResult,
		sleep:         options.Sleep,
		random:        options.Random,
		bufferBytes:   2,
	}
	if c.batchSize < 1 || c.batchSize > MaxBatchEvents {
		return nil, fmt.Errorf("meterstream: BatchSize must be 1..%d, not %d", MaxBatchEvents, c.batchSize)
	}
	if c.maxBatchBytes > MaxBatchBytes {
		c.maxBatchBytes = MaxBatchBytes
	}
	if c.http == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		if options.CACertPEM != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(options.CACertPEM) {
				return nil, errors.New("meterstream: CACertPEM holds no PEM certificate")
			}
			transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		c.http = &http.Client{Transport: transport}
	}
	if c.sleep == nil {
		c.sleep = sleepContext
	}
	if c.random == nil {
		source := rand.New(rand.NewSource(time.Now().UnixNano()))
		var mu sync.Mutex
		c.random = func() float64 {
			mu.Lock()
			defer mu.Unlock()
			return source.Float64()
		}
	}
	return c, nil
}

func or[T comparable](value, fallback T) T {
	var zero T
	if value == zero {
		return fallback
	}
	return value
}

func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// --- events ------------------------------------------------------------------------------------

// Add buffers an event and sends the buffer when it is full (BatchSize events, or
// MaxBatchBytes). The event is encoded now, so the bytes sent (and resent) are fixed here. It
// returns the result of a batch it sent, if any, and the error of one that could not be sent
// (also one the timer sent earlier).
func (c *Client) Add(ctx context.Context, event Event) (*BatchResult, error) {
	raw, err := encode(event)
	if err != nil {
		return nil, fmt.Errorf("meterstream: encode event %q: %w", event.ID, err)
	}
	c.mu.Lock()
	if err := c.takeDeferred(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	var batches [][]buffered
	if len(c.buffer) > 0 && c.bufferBytes+len(raw)+1 > c.maxBatchBytes {
		batches = append(batches, c.take())
	}
	if len(c.buffer) > 0 {
		c.bufferBytes++
	}
	c.bufferBytes += len(raw)
	c.buffer = append(c.buffer, buffered{event.ID, raw})
	if len(c.buffer) >= c.batchSize {
		batches = append(batches, c.take())
	} else {
		c.arm()
	}
	c.mu.Unlock()
	var result *BatchResult
	for _, batch := range batches {
		if result, err = c.sendTaken(ctx, batch); err != nil {
			return result, err
		}
	}
	return result, nil
}

// Flush sends what is buffered and waits for batches the timer is sending. It returns the
// error of a batch that could not be sent (reported to OnResult with every event failed).
func (c *Client) Flush(ctx context.Context) (*BatchResult, error) {
	c.mu.Lock()
	batch := c.take()
	c.mu.Unlock()
	var result *BatchResult
	var err error
	if len(batch) > 0 {
		result, err = c.sendTaken(ctx, batch)
	}
	c.background.Wait()
	c.mu.Lock()
	deferred := c.takeDeferred()
	c.mu.Unlock()
	if err == nil {
		err = deferred
	}
	return result, err
}

// Close sends what is buffered; the client can still be used for reads afterwards.
func (c *Client) Close(ctx context.Context) error {
	_, err := c.Flush(ctx)
	return err
}

// SendBatch sends events as one request, resending the same bytes on 429, 502-504 and
// network errors.
func (c *Client) SendBatch(ctx context.Context, events []Event) (*BatchResult, error) {
	parts := make([][]byte, len(events))
	for i, e := range events {
		raw, err := encode(e)
		if err != nil {
			return nil, fmt.Errorf("meterstream: encode event %q: %w", e.ID, err)
		}
		parts[i] = raw
	}
	return c.post(ctx, body(parts))
}

func body(parts [][]byte) []byte {
	return append(append([]byte("["), bytes.Join(parts, []byte(","))...), ']')
}

// take empties the buffer; c.mu is held.
func (c *Client) take() []buffered {
	batch := c.buffer
	c.buffer = nil
	c.bufferBytes = 2
	if c.timer != nil {
		if c.timer.Stop() {
			c.background.Done() // its function will not run
		}
		c.timer = nil
	}
	return batch
}

// takeDeferred returns and forgets the error of a batch the timer could not send; c.mu is held.
func (c *Client) takeDeferred() error {
	err := c.deferred
	c.deferred = nil
	return err
}

// arm starts the flush timer if it is not running; c.mu is held.
func (c *Client) arm() {
	if c.timer != nil || c.flushInterval < 0 {
		return
	}
	c.background.Add(1)
	var timer *time.Timer
	timer = time.AfterFunc(c.flushInterval, func() {
		defer c.background.Done()
		c.mu.Lock()
		if c.timer != timer {
			c.mu.Unlock()
			return
		}
		c.timer = nil
		batch := c.take()
		c.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		if _, err := c.sendTaken(context.Background(), batch); err != nil {
			c.mu.Lock()
			if c.deferred == nil {
				c.deferred = err
			}
			c.mu.Unlock()
		}
	})
	c.timer = timer
}

func (c *Client) sendTaken(ctx context.Context, batch []buffered) (*BatchResult, error) {
	parts := make([][]byte, len(batch))
	for i, b := range batch {
		parts[i] = b.raw
	}
	result, err := c.post(ctx, body(parts))
	if err != nil {
		failed := BatchResult{Failed: len(batch), Err: err, Results: make([]EventResult, len(batch))}
		for i, b := range batch {
			id := b.id
			failed.Results[i] = EventResult{Index: i, ID: &id, Status: "failed", Detail: err.Error()}
		}
		if c.onResult != nil {
			c.onResult(failed)
		}
		return &failed, err
	}
	if c.onResult != nil {
		c.onResult(*result)
	}
	return result, nil
}

func (c *Client) post(ctx context.Context, payload []byte) (*BatchResult, error) {
	status, answer, err := c.retrying(ctx, "POST", "/v1/events", nil,
		map[string]string{"Content-Type": batchType}, payload)
	if err != nil {
		return nil, err
	}
	var result BatchResult
	var probe struct {
		Results *json.RawMessage `json:"results"`
	}
	if (status != 202 && status != 422) || json.Unmarshal(answer, &probe) != nil || probe.Results == nil {
		return nil, refused("POST /v1/events", status, answer)
	}
	if err := json.Unmarshal(answer, &result); err != nil {
		return nil, refused("POST /v1/events", status, answer)
	}
	return &result, nil
}

// --- requests ----------------------------------------------------------------------------------

// backoff gives the waits between attempts: Retry-After (capped) when the answer has one,
// else min(cap, base * 2^(k-1)) * (0.5 + 0.5 * random()) after attempt k.
type backoff struct {
	delay, cap time.Duration
	random     func() float64
}

func (c *Client) newBackoff() *backoff {
	return &backoff{delay: c.backoff, cap: c.maxBackoff, random: c.random}
}

func (b *backoff) next(header http.Header) time.Duration {
	var wait time.Duration
	if value := header.Get("Retry-After"); digits(value) {
		seconds, _ := strconv.ParseInt(value, 10, 32)
		wait = minDuration(b.cap, time.Duration(seconds)*time.Second)
	} else {
		wait = time.Duration(float64(minDuration(b.cap, b.delay)) * (0.5 + 0.5*b.random()))
	}
	b.delay = minDuration(b.cap, 2*b.delay)
	return wait
}

func digits(s string) bool {
	if s == "" || len(s) > 9 {
		return s != "" // a Retry-After of 10 digits or more is longer than any cap
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values,
	headers map[string]string, body io.Reader,
) (*http.Request, error) {
	target := c.baseURL + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", UserAgent)
	for name, value := range headers {
		req.Header.Set(name, value)
	}
	return req, nil
}

// retrying sends a request until it gets an answer that is not 429/502/503/504, and returns
// its status and body.
func (c *Client) retrying(ctx context.Context, method, path string, query url.Values,
	headers map[string]string, payload []byte,
) (int, []byte, error) {
	b := c.newBackoff()
	var status int
	var header http.Header
	var cause error
	for attempt := 1; attempt <= c.maxAttempts; attempt++ {
		status, header, cause = 0, nil, nil
		answer, err := c.once(ctx, method, path, query, headers, payload)
		if err != nil {
			if ctx.Err() != nil {
				return 0, nil, ctx.Err()
			}
			cause = err
		} else {
			status, header = answer.status, answer.header
			if !retryable(status) {
				return status, answer.body, nil
			}
		}
		if attempt == c.maxAttempts {
			break
		}
		if err := c.sleep(ctx, b.next(header)); err != nil {
			return 0, nil, err
		}
	}
	return 0, nil, &APIError{
		Op:     fmt.Sprintf("%s %s: gave up after %d attempts", method, path, c.maxAttempts),
		Status: status, kind: ErrRetriesExhausted, cause: cause,
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (c *Client) once(ctx context.Context, method, path string, query url.Values,
	headers map[string]string, payload []byte,
) (*answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := c.newRequest(ctx, method, path, query, headers, reader)
	if err != nil {
		return nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return &answer{res.StatusCode, res.Header, data}, nil
}
