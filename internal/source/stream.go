package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// streamReader reads a URL from offset 0 to the end and resumes a dropped
// connection with Range + If-Range.
//
// Resuming, and what a server may answer:
//   - 206 whose Content-Range starts at the offset reached, for the same
//     file (ETag/Last-Modified and total size unchanged): carry on.
//   - 200 with a different validator or size: ErrChanged, fatal.
//   - 200 with the same ETag or Last-Modified (the server ignores Range):
//     the new body is read and the first N bytes thrown away (logged at
//     Warn), since a proven-identical file makes that safe. Without any
//     validator a 200 is fatal: "server does not support resuming".
//   - 404/410: ErrNotFound; 408/425/429/5xx and transport errors: retried;
//     anything else: fatal.
//
// Retries are bounded by Options.Retries in a row without progress, with
// exponential back-off; a stream that still ends before Size is an error
// wrapping io.ErrUnexpectedEOF and naming the offset reached.
type streamReader struct {
	s      *httpSource
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool // detaches from the source's lifetime

	mu      sync.Mutex // one Read at a time; Close waits for it
	off     int64
	body    io.ReadCloser
	fails   int   // consecutive failed attempts without progress
	lastErr error // why the previous body ended early
	err     error // sticky final result (io.EOF or an error)
}

var (
	errReaderClosed = errors.New("reader closed")
	errSourceClosed = errors.New("source closed")
)

func newStreamReader(ctx context.Context, s *httpSource) *streamReader {
	rctx, cancel := context.WithCancelCause(ctx)
	r := &streamReader{s: s, ctx: rctx, cancel: cancel}
	r.stop = context.AfterFunc(s.life, func() { cancel(errSourceClosed) })
	return r
}

// retryableError marks a failure another attempt may cure.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func (r *streamReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) == 0 {
		return 0, r.err
	}
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.off += int64(n)
			r.fails = 0
		}
		if err == nil {
			return n, nil
		}
		r.body.Close()
		r.body = nil
		if r.ctx.Err() != nil {
			r.err = r.ctxErr()
			return n, r.err
		}
		size := r.s.size
		if err == io.EOF && (size < 0 || r.off == size) {
			r.err = io.EOF
			return n, io.EOF
		}
		if size >= 0 && r.off > size {
			r.err = fmt.Errorf("reading %s: server sent more than the %d bytes announced; %w", r.s.name, size, ErrChanged)
			return n, r.err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // body ended before the announced size
		}
		r.lastErr = err
		if n > 0 {
			return n, nil // resume on the next Read
		}
	}
}

// ctxErr reports why r.ctx ended.
func (r *streamReader) ctxErr() error {
	c := context.Cause(r.ctx)
	if errors.Is(c, errReaderClosed) {
		return fmt.Errorf("reading %s: %w", r.s.name, errReaderClosed)
	}
	return fmt.Errorf("reading %s at byte %d: %w", r.s.name, r.off, c)
}

// connect opens a body at r.off, retrying with back-off; r.lastErr set
// means the previous body broke, so this is already a retry. It sets
// r.err and returns it on final failure.
func (r *streamReader) connect() error {
	retries := r.s.opts.Retries
	for {
		if r.lastErr != nil {
			r.fails++
			if r.fails > retries {
				r.err = r.giveUp()
				return r.err
			}
			d := r.s.backoff(r.fails)
			r.s.opts.Logger.Warn("download interrupted, resuming",
				"url", r.s.name, "offset", r.off, "size", r.s.size,
				"attempt", r.fails, "retries", retries, "delay", d, "err", r.lastErr)
			if err := sleep(r.ctx, d); err != nil {
				r.err = r.ctxErr()
				return r.err
			}
		}
		body, err := r.request()
		if err == nil {
			r.body = body
			return nil
		}
		if r.ctx.Err() != nil {
			r.err = r.ctxErr()
			return r.err
		}
		var re *retryableError
		if !errors.As(err, &re) {
			r.err = err
			return err
		}
		r.lastErr = re.err
	}
}

func (r *streamReader) giveUp() error {
	size := "unknown size"
	if r.s.size >= 0 {
		size = fmt.Sprintf("%d", r.s.size)
	}
	prefix := fmt.Sprintf("downloading %s: incomplete, stopped at byte %d of %s after %d retries",
		r.s.name, r.off, size, r.s.opts.Retries)
	if errors.Is(r.lastErr, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w", prefix, r.lastErr)
	}
	return fmt.Errorf("%s: %w (last error: %w)", prefix, io.ErrUnexpectedEOF, r.lastErr)
}

// request sends one GET from r.off and vets the answer.
func (r *streamReader) request() (io.ReadCloser, error) {
	s := r.s
	h := http.Header{}
	if r.off > 0 {
		h.Set("Range", fmt.Sprintf("bytes=%d-", r.off))
		if v := s.ifRange(); v != "" {
			h.Set("If-Range", v)
		}
	}
	ctx, cancel := context.WithCancelCause(r.ctx)
	resp, err := s.do(ctx, h)
	if err != nil {
		cancel(nil)
		return nil, &retryableError{err}
	}
	body := newWatchedBody(resp.Body, ctx, cancel, s.opts.StallTimeout)
	fail := func(err error) (io.ReadCloser, error) {
		body.Close()
		return nil, err
	}
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
		start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(fmt.Errorf("resuming %s at byte %d: %w", s.name, r.off, err))
		}
		if start != r.off {
			return fail(fmt.Errorf("resuming %s: asked for bytes from %d, server sent from %d", s.name, r.off, start))
		}
		if s.size >= 0 && total >= 0 && total != s.size {
			return fail(fmt.Errorf("%s %w (size was %d, now %d); start over", s.name, ErrChanged, s.size, total))
		}
		if err := s.checkSame(resp.Header); err != nil {
			return fail(err)
		}
		return body, nil
	case code == http.StatusOK:
		if err := s.checkSame(resp.Header); err != nil {
			return fail(err)
		}
		if s.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != s.size {
			return fail(fmt.Errorf("%s %w (size was %d, now %d); start over", s.name, ErrChanged, s.size, resp.ContentLength))
		}
		if r.off == 0 {
			return body, nil
		}
		if !s.sameValidatorPresent(resp.Header) {
			return fail(fmt.Errorf("resuming %s at byte %d: server does not support resuming "+
				"(it answered 200 to a Range request and gives no ETag or Last-Modified "+
				"to prove the file unchanged); retry, or copy the image closer", s.name, r.off))
		}
		// Same file, Range ignored: skip what was already delivered.
		s.opts.Logger.Warn("server ignores Range; re-reading the start to resume",
			"url", s.name, "offset", r.off)
		if _, err := io.CopyN(io.Discard, body, r.off); err != nil {
			body.Close()
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, &retryableError{fmt.Errorf("skipping to byte %d: %w", r.off, err)}
		}
		return body, nil
	case code == http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("%s %w (server cannot serve from byte %d: %s); start over", s.name, ErrChanged, r.off, resp.Status))
	case retryableStatus(code):
		body.Close()
		return nil, &retryableError{fmt.Errorf("server answered %s", resp.Status)}
	default:
		return fail(statusError(s.name, resp, r.off))
	}
}

// Close ends the stream; a Read blocked on the network returns at once.
func (r *streamReader) Close() error {
	r.cancel(errReaderClosed)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop()
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.err == nil || r.err == io.EOF {
		r.err = fmt.Errorf("reading %s: %w", r.s.name, errReaderClosed)
	}
	return nil
}
