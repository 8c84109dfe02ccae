// Command throughput sends events through one client (1,000-event batches) and prints how
// long it took: run by bench/sdk_throughput.py.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	meterstream "github.com/meterstream/meterstream/clients/go"
)

func main() {
	events, _ := strconv.Atoi(os.Getenv("METERSTREAM_BENCH_EVENTS"))
	var accepted int64
	client, err := meterstream.New(os.Getenv("METERSTREAM_BENCH_URL"), os.Getenv("METERSTREAM_BENCH_TOKEN"), meterstream.Options{
		OnResult: func(r meterstream.BatchResult) { atomic.AddInt64(&accepted, int64(r.Accepted)) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	account, prefix := os.Getenv("METERSTREAM_BENCH_ACCOUNT"), os.Getenv("METERSTREAM_BENCH_PREFIX")
	ctx := context.Background()
	started := time.Now()
	for i := 0; i < events; i++ {
		event := meterstream.NewEvent("api_calls", account, map[string]any{"endpoint": "/v1/search", "status": 200},
			meterstream.WithID(prefix+"-"+strconv.Itoa(i)))
		if _, err := client.Add(ctx, event); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := client.Close(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seconds := time.Since(started).Seconds()
	out, _ := json.Marshal(map[string]any{"sdk": "go", "events": events, "accepted": atomic.LoadInt64(&accepted), "seconds": seconds})
	fmt.Println(string(out))
}
