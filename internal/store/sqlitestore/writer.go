package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Group commit. Every write is a function run on the one write
// connection inside a transaction. A single goroutine owns that
// connection; writes that arrive while it is busy are run together in
// one BEGIN IMMEDIATE ... COMMIT, each inside its own SAVEPOINT, so one
// fsync (synchronous=FULL) makes a whole batch durable. A write whose
// function fails is rolled back to its savepoint alone; the others in
// the batch still commit. No caller is answered before the COMMIT that
// holds its write has returned, so "durable when the method returns"
// holds for each of them, and a failed COMMIT fails every write in it.
//
// Hand-written: database/sql has no group commit, and the pattern is
// small (it is what PostgreSQL's commit_delay and many WAL logs do).

// maxBatch bounds the writes in one transaction (and so a writer's wait).
const maxBatch = 128

// dbtx is what a write function may use: the write connection, inside
// the batch's transaction and its own savepoint.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx dbtx) error
	done chan error
	// panicked is fn's panic value, set before done is sent.
	panicked any
}

// ErrClosed: the store was closed.
var ErrClosed = errors.New("state database is closed")

type writer struct {
	conn *sql.Conn
	// stmts caches prepared statements by SQL text; only loop uses it.
	// Preparing was a third of a PXE contact's CPU time.
	stmts map[string]*sql.Stmt
	reqs  chan *writeReq // unbuffered: a sent request is being served
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func startWriter(conn *sql.Conn) *writer {
	w := &writer{conn: conn, stmts: map[string]*sql.Stmt{}, reqs: make(chan *writeReq), quit: make(chan struct{})}
	w.wg.Add(1)
	go w.loop()
	return w
}

// write runs fn in a transaction and returns when it is committed (nil)
// or rolled back (fn's or the commit's error). Once fn has been handed
// to the writer the call waits for the outcome even if ctx ends, since
// the write may already be committed; ctx is checked again just before
// fn runs.
func (s *SQLite) write(ctx context.Context, fn func(ctx context.Context, tx dbtx) error) error {
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.wr.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.wr.quit:
		return ErrClosed
	}
	err := <-req.done
	if req.panicked != nil {
		panic(req.panicked)
	}
	return err
}

func (w *writer) loop() {
	defer w.wg.Done()
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-w.reqs:
			batch = append(batch[:0], r)
		case <-w.quit:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		w.run(batch)
	}
}

// run executes one batch. Statements run under context.Background: a
// cancelled context interrupts SQLite, and an interrupted write rolls
// back the whole transaction, other callers' writes included.
func (w *writer) run(batch []*writeReq) {
	ctx := context.Background()
	errs := make([]error, len(batch))
	finish := func() {
		for i, r := range batch {
			r.done <- errs[i]
		}
	}
	defer finish()
	failAll := func(err error) {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	// abort fails every write of the batch not failed yet (those already
	// run included: their savepoints go with the transaction).
	abort := func(err error) {
		failAll(err)
		w.rollback()
	}
	if _, err := w.exec(ctx, "BEGIN IMMEDIATE"); err != nil {
		failAll(fmt.Errorf("begin: %w", err))
		return
	}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if _, err := w.exec(ctx, "SAVEPOINT w"); err != nil {
			abort(fmt.Errorf("savepoint: %w", err))
			return
		}
		if err := w.call(ctx, r); err != nil {
			errs[i] = err
			// A statement error may have ended the whole transaction
			// (SQLITE_FULL, IOERR): then ROLLBACK TO fails and nothing
			// of this batch is kept.
			_, rerr := w.exec(ctx, "ROLLBACK TO w")
			if rerr == nil {
				_, rerr = w.exec(ctx, "RELEASE w")
			}
			if rerr != nil {
				abort(fmt.Errorf("transaction aborted by %w (rollback: %v)", err, rerr))
				return
			}
			continue
		}
		if _, err := w.exec(ctx, "RELEASE w"); err != nil {
			abort(fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	if _, err := w.exec(ctx, "COMMIT"); err != nil {
		abort(fmt.Errorf("commit: %w", err))
	}
}

// call runs r.fn; a panic in it is handed to r's caller to re-raise in
// its own goroutine (where net/http recovers it) instead of killing the
// writer, and r's write is rolled back like a failed one.
func (w *writer) call(ctx context.Context, r *writeReq) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.panicked = p
			err = fmt.Errorf("panic in write: %v", p)
		}
	}()
	return r.fn(ctx, w)
}

// rollback ends a failed transaction; an error means none was open.
func (w *writer) rollback() {
	w.exec(context.Background(), "ROLLBACK")
}

// close stops the writer after the batch in progress and releases the
// connection.
func (w *writer) close() error {
	w.once.Do(func() { close(w.quit) })
	w.wg.Wait()
	for _, st := range w.stmts {
		st.Close()
	}
	return w.conn.Close()
}

func (w *writer) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	w.stmts[query] = st
	return st, nil
}

// exec, ExecContext, QueryContext and QueryRowContext make the writer the
// dbtx of write functions, with prepared statements. query must be one
// statement.
func (w *writer) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := w.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (w *writer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return w.exec(ctx, query, args...)
}

func (w *writer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (w *writer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := w.stmt(ctx, query)
	if err != nil {
		// A *sql.Row cannot be built with an error; a statement prepared
		// on the closed-over connection returns it from Scan instead.
		return w.conn.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
