package meterstream

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"
)

// UsageRow is a row of usage_aggregates. Quantity is a decimal string (exact); times are
// ISO 8601 strings as the API sends them.
type UsageRow struct {
	AccountID     string `json:"account_id"`
	Meter         string `json:"meter"`
	PeriodStart   string `json:"period_start"`
	Dimensions    string `json:"dimensions"`
	Quantity      string `json:"quantity"`
	EventCount    int64  `json:"event_count"`
	FirstEventAt  string `json:"first_event_at"`
	LastEventAt   string `json:"last_event_at"`
	LastArrivedAt string `json:"last_arrived_at"`
	UpdatedAt     string `json:"updated_at"`
}

// RejectionRow is an entry of the validation log.
type RejectionRow struct {
	AccountID  string `json:"account_id"`
	Reason     string `json:"reason"`
	Detail     string `json:"detail"`
	RawPayload string `json:"raw_payload"`
	ArrivedAt  string `json:"arrived_at"`
	RejectedAt string `json:"rejected_at"`
	Source     struct {
		Topic     string `json:"topic"`
		Partition int    `json:"partition"`
		Offset    int64  `json:"offset"`
	} `json:"source"`
}

// UsageFilter selects usage rows; zero fields are not sent.
type UsageFilter struct {
	Account    string
	Meter      string
	PeriodFrom string // first period_start to include, YYYY-MM-DD
	PeriodTo   string
	Limit      int // rows per page, at most 1,000
}

// RejectionFilter selects rejections; zero fields are not sent.
type RejectionFilter struct {
	Account string
	Reason  string
	Since   time.Time // arrived at or after
	Until   time.Time // arrived before
	Limit   int
}

// Iterator walks every row of a read, fetching the pages as it goes:
//
//	it := client.Usage(ctx, meterstream.UsageFilter{Account: "acct-42"})
//	for it.Next() {
//		row := it.Value()
//	}
//	if err := it.Err(); err != nil { ... }
type Iterator[T any] struct {
	client *Client
	ctx    context.Context
	path   string
	query  url.Values
	page   []T
	value  T
	done   bool
	err    error
}

// Next moves to the next row, fetching the next page when needed; false at the end or on an error.
func (it *Iterator[T]) Next() bool {
	for len(it.page) == 0 {
		if it.done || it.err != nil {
			return false
		}
		it.fetch()
	}
	it.value, it.page = it.page[0], it.page[1:]
	return true
}

// Value is the current row.
func (it *Iterator[T]) Value() T { return it.value }

// Err is the error that ended the iteration, if any.
func (it *Iterator[T]) Err() error { return it.err }

// All reads every remaining row.
func (it *Iterator[T]) All() ([]T, error) {
	var rows []T
	for it.Next() {
		rows = append(rows, it.Value())
	}
	return rows, it.Err()
}

func (it *Iterator[T]) fetch() {
	status, body, err := it.client.retrying(it.ctx, "GET", it.path, it.query, nil, nil)
	if err != nil {
		it.err = err
		return
	}
	if status != 200 {
		it.err = refused("GET "+it.path, status, body)
		return
	}
	var doc struct {
		Items      []T     `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		it.err = refused("GET "+it.path, status, body)
		return
	}
	it.page = doc.Items
	if doc.NextCursor == nil || *doc.NextCursor == "" {
		it.done = true
	} else {
		it.query.Set("cursor", *doc.NextCursor)
	}
}

func set(q url.Values, name, value string) {
	if value != "" {
		q.Set(name, value)
	}
}

func setLimit(q url.Values, limit int) {
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
}

func setTime(q url.Values, name string, t time.Time) {
	if !t.IsZero() {
		q.Set(name, t.UTC().Format(time.RFC3339Nano))
	}
}

// Usage iterates over every usage row of your organisation that matches the filter.
func (c *Client) Usage(ctx context.Context, filter UsageFilter) *Iterator[UsageRow] {
	q := url.Values{}
	set(q, "account", filter.Account)
	set(q, "meter", filter.Meter)
	set(q, "period_from", filter.PeriodFrom)
	set(q, "period_to", filter.PeriodTo)
	setLimit(q, filter.Limit)
	return &Iterator[UsageRow]{client: c, ctx: ctx, path: "/v1/usage", query: q}
}

// Rejections iterates over every rejection of your accounts that matches the filter, oldest first.
func (c *Client) Rejections(ctx context.Context, filter RejectionFilter) *Iterator[RejectionRow] {
	q := url.Values{}
	set(q, "account", filter.Account)
	set(q, "reason", filter.Reason)
	setTime(q, "since", filter.Since)
	setTime(q, "until", filter.Until)
	setLimit(q, filter.Limit)
	return &Iterator[RejectionRow]{client: c, ctx: ctx, path: "/v1/rejections", query: q}
}
