package meterstream_test

// The live test: run by tests/clients/test_live.py against a real `meterstream serve` (skipped
// without METERSTREAM_LIVE_PHASE). Same steps as tests/clients/live_python.py.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	meterstream "github.com/meterstream/meterstream/clients/go"
)

const (
	liveEvents   = 2500
	liveUploaded = 100
)

func TestLive(t *testing.T) {
	phase := os.Getenv("METERSTREAM_LIVE_PHASE")
	if phase == "" {
		t.Skip("run by tests/clients/test_live.py (METERSTREAM_LIVE_PHASE)")
	}
	need := func(name string) string {
		value := os.Getenv(name)
		if value == "" {
			t.Fatalf("%s is not set", name)
		}
		return value
	}
	url, token := need("METERSTREAM_LIVE_URL"), need("METERSTREAM_LIVE_TOKEN")
	account, prefix := need("METERSTREAM_LIVE_ACCOUNT"), need("METERSTREAM_LIVE_PREFIX")
	quantity, count := int64(liveUploaded+7), int64(liveEvents+liveUploaded+1)
	for i := 0; i < liveEvents; i++ {
		quantity += int64(i%100 + 1)
	}
	tokens := func(n any, id, subject string) meterstream.Event {
		return meterstream.NewEvent("llm_tokens", subject, map[string]any{"tokens": n, "model": "small"}, meterstream.WithID(id))
	}
	ctx := context.Background()

	if phase == "send" {
		client, err := meterstream.New(url, token, meterstream.Options{
			Backoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second, MaxAttempts: 40,
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < liveEvents; i++ {
			model := "small"
			if i%2 == 1 {
				model = "large"
			}
			event := meterstream.NewEvent("llm_tokens", account,
				map[string]any{"tokens": i%100 + 1, "model": model}, meterstream.WithID(fmt.Sprintf("%s-%d", prefix, i)))
			if _, err := client.Add(ctx, event); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		mixed, err := client.SendBatch(ctx, []meterstream.Event{
			tokens(7, prefix+"-ok", account),
			tokens(1, prefix+"-x", need("METERSTREAM_LIVE_STRANGER")),
			tokens("lots", prefix+"-bad", account),
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range mixed.Results {
			got = append(got, r.Status+":"+r.Reason)
		}
		if want := "accepted: rejected:ACCOUNT_NOT_IN_ORGANISATION accepted:"; strings.Join(got, " ") != want {
			t.Fatalf("mixed batch %v, want %s", got, want)
		}
		path := filepath.Join(need("METERSTREAM_LIVE_DIR"), "go-upload.jsonl")
		var lines []byte
		for i := 0; i < liveUploaded; i++ {
			raw, _ := json.Marshal(tokens(1, fmt.Sprintf("%s-up-%d", prefix, i), account))
			lines = append(append(lines, raw...), '\n')
		}
		if err := os.WriteFile(path, lines, 0o600); err != nil {
			t.Fatal(err)
		}
		var last [2]int64
		status, err := client.Upload(ctx, path, meterstream.UploadOptions{
			Progress: func(sent, size int64) { last = [2]int64{sent, size} },
		})
		if err != nil {
			t.Fatal(err)
		}
		if status.State != "done" || status.Accepted != liveUploaded || status.Rejected != 0 {
			t.Fatalf("upload %+v", status)
		}
		if size := int64(len(lines)); last != [2]int64{size, size} {
			t.Fatalf("last progress %v, want %d", last, size)
		}
		if err := client.Close(ctx); err != nil {
			t.Fatal(err)
		}
		fmt.Println("LIVE SEND OK")
		return
	}

	client, _ := meterstream.New(url, token, meterstream.Options{})
	rows, err := client.Usage(ctx, meterstream.UsageFilter{Account: account, Limit: 1}).All()
	if err != nil {
		t.Fatal(err)
	}
	var sum, events int64
	for _, r := range rows {
		q, err := strconv.ParseInt(r.Quantity, 10, 64)
		if err != nil {
			t.Fatalf("quantity %q", r.Quantity)
		}
		sum += q
		events += r.EventCount
	}
	if len(rows) < 2 || sum != quantity || events != count {
		t.Fatalf("usage rows %+v: %d in %d events, want %d in %d", rows, sum, events, quantity, count)
	}
	rejected, err := client.Rejections(ctx, meterstream.RejectionFilter{Account: account}).All()
	if err != nil {
		t.Fatal(err)
	}
	if len(rejected) != 1 || rejected[0].Reason != "WRONG_TYPE" || !strings.Contains(rejected[0].RawPayload, prefix+"-bad") {
		t.Fatalf("rejections %+v", rejected)
	}
	stranger, _ := meterstream.New(url, "ms_000000000000_wrong", meterstream.Options{})
	if _, err := stranger.Usage(ctx, meterstream.UsageFilter{}).All(); !errors.Is(err, meterstream.ErrUnauthenticated) {
		t.Fatalf("a wrong token: %v, want ErrUnauthenticated", err)
	}
	fmt.Println("LIVE VERIFY OK")
}
