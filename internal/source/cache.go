package source

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// blockCache is the io.ReaderAt of a URL: aligned blocks fetched with one
// range request each, kept in a bounded LRU, safe for concurrent use.
// Concurrent misses on one block share a single fetch. Hand-written: no
// well-kept library does range-request block caching over net/http.
type blockCache struct {
	s   *httpSource
	bs  int64
	max int

	mu     sync.Mutex
	blocks map[int64]*block // cached and in-flight
	lru    *list.List       // cached blocks only, most recent first
}

type block struct {
	idx  int64
	done chan struct{} // closed when data or err is set
	data []byte
	err  error
	elem *list.Element // nil while in flight
}

var _ io.ReaderAt = (*blockCache)(nil)

func newBlockCache(s *httpSource) *blockCache {
	return &blockCache{
		s:      s,
		bs:     s.opts.BlockSize,
		max:    s.opts.CacheBlocks,
		blocks: map[int64]*block{},
		lru:    list.New(),
	}
}

// ReadAt implements io.ReaderAt.
func (c *blockCache) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading %s: negative offset %d", c.s.name, off)
	}
	size := c.s.size
	n := 0
	for n < len(p) && off < size {
		idx := off / c.bs
		data, err := c.get(idx)
		if err != nil {
			return n, err
		}
		k := copy(p[n:], data[off-idx*c.bs:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// get returns block idx, from the cache, a fetch in flight, or a new fetch.
func (c *blockCache) get(idx int64) ([]byte, error) {
	c.mu.Lock()
	if b := c.blocks[idx]; b != nil {
		if b.elem != nil {
			c.lru.MoveToFront(b.elem)
			c.mu.Unlock()
			return b.data, nil
		}
		c.mu.Unlock()
		select {
		case <-b.done:
			return b.data, b.err
		case <-c.s.life.Done():
			return nil, fmt.Errorf("reading %s: %w", c.s.name, errSourceClosed)
		}
	}
	b := &block{idx: idx, done: make(chan struct{})}
	c.blocks[idx] = b
	c.mu.Unlock()
	c.s.dropPending()

	data, err := c.fetch(idx)

	c.mu.Lock()
	b.data, b.err = data, err
	if err != nil {
		delete(c.blocks, idx) // a later read tries again
	} else if c.blocks[idx] == b { // not dropped by Close meanwhile
		b.elem = c.lru.PushFront(b)
		for c.lru.Len() > c.max {
			old := c.lru.Remove(c.lru.Back()).(*block)
			delete(c.blocks, old.idx)
		}
	}
	c.mu.Unlock()
	close(b.done)
	return data, err
}

// drop forgets every cached block (Close).
func (c *blockCache) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocks = map[int64]*block{}
	c.lru.Init()
}

// fetch reads block idx (see readRange).
func (c *blockCache) fetch(idx int64) ([]byte, error) {
	start := idx * c.bs
	end := min(start+c.bs, c.s.size) // exclusive
	buf := make([]byte, end-start)
	if err := c.readRange(buf, start); err != nil {
		return nil, err
	}
	return buf, nil
}

// readRange fills buf with the bytes at start with range requests,
// resuming a partial answer and retrying like the stream does
// (Options.Retries in a row without progress, exponential back-off).
func (c *blockCache) readRange(buf []byte, start int64) error {
	s := c.s
	end := start + int64(len(buf))
	got, fails := 0, 0
	for {
		n, err := c.fetchRange(start+int64(got), end, buf[got:])
		got += n
		if n > 0 {
			fails = 0
		}
		if got == len(buf) {
			return nil
		}
		if err == nil {
			continue // the server sent less than asked; ask for the rest
		}
		if s.life.Err() != nil {
			return fmt.Errorf("reading %s: %w", s.name, errSourceClosed)
		}
		var re *retryableError
		if !errors.As(err, &re) {
			return err
		}
		fails++
		if fails > s.opts.Retries {
			return fmt.Errorf("reading %s bytes %d-%d: stopped at byte %d after %d retries: %w",
				s.name, start, end-1, start+int64(got), s.opts.Retries, re.err)
		}
		d := s.backoff(fails)
		s.opts.Logger.Warn("range request failed, retrying",
			"url", s.name, "offset", start+int64(got), "attempt", fails,
			"retries", s.opts.Retries, "delay", d, "err", re.err)
		if err := sleep(s.life, d); err != nil {
			return fmt.Errorf("reading %s: %w", s.name, errSourceClosed)
		}
	}
}

// fetchRange asks for bytes [from, to) and reads what the server sends
// into dst; it returns how many bytes arrived.
func (c *blockCache) fetchRange(from, to int64, dst []byte) (int, error) {
	s := c.s
	ctx, cancel := context.WithCancelCause(s.life)
	resp, err := s.do(ctx, http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, to-1)}})
	if err != nil {
		cancel(nil)
		return 0, &retryableError{err}
	}
	body := newWatchedBody(resp.Body, ctx, cancel, s.opts.StallTimeout)
	defer body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusPartialContent:
	case code == http.StatusOK:
		if err := s.checkSame(resp.Header); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("reading %s: server answered 200 to a Range request; it no longer serves byte ranges", s.name)
	case code == http.StatusRequestedRangeNotSatisfiable:
		return 0, fmt.Errorf("%s %w (server cannot serve bytes %d-%d: %s)", s.name, ErrChanged, from, to-1, resp.Status)
	case retryableStatus(code):
		return 0, &retryableError{fmt.Errorf("server answered %s", resp.Status)}
	default:
		return 0, statusError(s.name, resp, from)
	}
	if err := s.checkSame(resp.Header); err != nil {
		return 0, err
	}
	rs, re, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", s.name, err)
	}
	if total >= 0 && total != s.size {
		return 0, fmt.Errorf("%s %w (size was %d, now %d)", s.name, ErrChanged, s.size, total)
	}
	if rs != from || re >= to {
		return 0, fmt.Errorf("reading %s: asked for bytes %d-%d, server sent %d-%d", s.name, from, to-1, rs, re)
	}
	n, err := io.ReadFull(body, dst[:re-rs+1])
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, &retryableError{err}
	}
	return n, nil
}
