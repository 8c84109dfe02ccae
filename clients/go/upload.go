package meterstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UploadStatus is an upload's state and counts (GET /v1/uploads/{id}).
type UploadStatus struct {
	UploadID   string `json:"upload_id"`
	Format     string `json:"format"`
	Filename   string `json:"filename"`
	State      string `json:"state"` // open, interrupted, done or failed
	Done       bool   `json:"done"`
	Offset     int64  `json:"offset"`
	Accepted   int64  `json:"accepted"`
	Rejected   int64  `json:"rejected"`
	Error      string `json:"error"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
	Rejections []struct {
		Offset  int64  `json:"offset"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
		Excerpt string `json:"excerpt"`
	} `json:"rejections"`
}

// UploadOptions of Upload; all optional.
type UploadOptions struct {
	Format   string                 // jsonl or json; from the file name otherwise (.json is json)
	UploadID string                 // resume this upload (a UUID); a new one otherwise
	Progress func(sent, size int64) // called as the file goes out
}

// Upload sends a JSON Lines or JSON array file, resuming after any interruption from the
// offset the server committed, and returns the final status (state done, or failed for a
// JSON array that is not valid JSON).
func (c *Client) Upload(ctx context.Context, path string, options UploadOptions) (*UploadStatus, error) {
	format := options.Format
	if format == "" {
		format = "jsonl"
		if strings.EqualFold(filepath.Ext(path), ".json") {
			format = "json"
		}
	}
	id := options.UploadID
	if id == "" {
		id = newUUID()
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("meterstream: upload: %w", err)
	}
	size := info.Size()
	b := c.newBackoff()
	created, offset := false, int64(0)
	for attempt := 0; attempt < c.maxAttempts; attempt++ {
		res, err := c.sendFile(ctx, path, id, format, offset, size, created, options.Progress)
		var header http.Header
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		} else {
			header = res.header
			switch {
			case res.status == 200 || res.status == 201 || res.status == 422:
				var doc UploadStatus
				if json.Unmarshal(res.body, &doc) == nil && (doc.State == "done" || doc.State == "failed") {
					return &doc, nil
				}
			case !retryable(res.status) && res.status != 409:
				return nil, refused("upload", res.status, res.body)
			}
		}
		status, err := c.UploadStatus(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			created, offset = false, 0
		case err != nil:
			return nil, err
		default:
			created, offset = true, status.Offset
			if status.State == "done" {
				return status, nil
			}
		}
		if err := c.sleep(ctx, b.next(header)); err != nil {
			return nil, err
		}
	}
	return nil, &APIError{
		Op:   fmt.Sprintf("upload %s: gave up after %d attempts", id, c.maxAttempts),
		kind: ErrRetriesExhausted,
	}
}

// UploadStatus is an upload's status; the error wraps ErrNotFound if there is no such upload.
func (c *Client) UploadStatus(ctx context.Context, uploadID string) (*UploadStatus, error) {
	status, body, err := c.retrying(ctx, "GET", "/v1/uploads/"+url.PathEscape(uploadID), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, refused("upload status", status, body)
	}
	var doc UploadStatus
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, refused("upload status", status, body)
	}
	return &doc, nil
}

// progressReader reports the bytes read so far (plus where it started) after each read.
type progressReader struct {
	r        io.Reader
	sent     int64
	size     int64
	progress func(sent, size int64)
}

func (p *progressReader) Read(buf []byte) (int, error) {
	n, err := p.r.Read(buf)
	if n > 0 {
		p.sent += int64(n)
		if p.progress != nil {
			p.progress(p.sent, p.size)
		}
	}
	return n, err
}

func (c *Client) sendFile(ctx context.Context, path, id, format string, offset, size int64,
	created bool, progress func(sent, size int64),
) (*answer, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	body := &progressReader{r: io.NewSectionReader(file, offset, size-offset), sent: offset, size: size, progress: progress}
	var req *http.Request
	if created {
		req, err = c.newRequest(ctx, "PATCH", "/v1/uploads/"+url.PathEscape(id), nil,
			map[string]string{"Upload-Offset": strconv.FormatInt(offset, 10)}, body)
	} else {
		name := filepath.Base(path)
		if len(name) > 255 {
			name = name[:255]
		}
		req, err = c.newRequest(ctx, "POST", "/v1/uploads", url.Values{"format": {format}, "filename": {name}},
			map[string]string{"Upload-Id": id}, body)
	}
	if err != nil {
		return nil, err
	}
	req.ContentLength = size - offset
	if req.ContentLength == 0 {
		req.Body = http.NoBody
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
