// Package sqlitestore is the embedded SQLite implementation of
// store.Store (modernc.org/sqlite, no cgo): WAL, synchronous=FULL with
// group commit, embedded versioned migrations.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// SQLite is the embedded store.Store: one database file in WAL mode.
//
// Connections: one write connection, owned by a goroutine that runs every
// write as a BEGIN IMMEDIATE transaction and commits concurrent writes
// together (group commit, writer.go), so writers queue in Go instead of
// spinning on SQLITE_BUSY; and a pool of query_only read connections,
// which WAL lets read while the writer writes.
//
// Durability: synchronous=FULL. In WAL mode NORMAL already keeps every
// committed transaction across a killed process (the WAL frames are in
// the OS page cache when COMMIT returns) but may lose the last commits on
// a power cut or kernel crash; FULL syncs the WAL on every commit, so a
// write the caller was told about survives those too (a lost `done`
// would reflash a machine). Group commit pays one fsync per batch, which
// keeps FULL above the PXE throughput target (BenchmarkPXEContact); the
// kill -9 test is in sqlite_test.go.
type SQLite struct {
	path   string
	w      *sql.DB // one connection, writes only (owned by wr)
	wr     *writer
	r      *sql.DB // query_only readers
	logger *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*SQLite)(nil)

// synchronous is the PRAGMA synchronous of the write connection.
const synchronous = "FULL"

// busyTimeoutMS bounds the wait for another process's lock (a second
// bty-web on the same file, the sqlite3 shell) before SQLITE_BUSY.
const busyTimeoutMS = 10000

// Open opens (creating if missing) the state database at path,
// creating its directory (0700) and file (0600), checks it with PRAGMA
// quick_check and applies pending migrations. An existing file that is
// empty or not an SQLite database, or a damaged database, is refused
// and left as it is: only a missing path starts a new fleet. A database
// written by a newer bty-web is refused with a *SchemaTooNewError.
func Open(ctx context.Context, path string, logger *slog.Logger) (*SQLite, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("opening state database: empty path (set BTY_STATE_DIR)")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening state database %s: %w", path, err)
	}
	if err := prepareFile(abs); err != nil {
		return nil, err
	}

	w, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_txlock": {"immediate"},
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS),
			"journal_mode(WAL)",
			"synchronous(" + synchronous + ")",
			"foreign_keys(1)",
		},
	}))
	if err != nil {
		return nil, fmt.Errorf("opening state database %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	s := &SQLite{path: abs, w: w, logger: logger}
	if err := s.setup(ctx); err != nil {
		w.Close()
		return nil, err
	}

	conn, err := w.Conn(ctx)
	if err != nil {
		w.Close()
		return nil, s.openError(err)
	}
	s.wr = startWriter(conn)

	n := max(4, 2*runtime.GOMAXPROCS(0))
	r, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS),
			"foreign_keys(1)",
			"query_only(1)",
		},
	}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening state database %s: %w", abs, err)
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
	s.r = r
	if err := r.PingContext(ctx); err != nil {
		s.Close()
		return nil, s.openError(err)
	}
	return s, nil
}

// dsn is a file: URI for path (so any byte in the path survives) with
// the driver's parameters.
func dsn(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// prepareFile creates the database's directory (0700) and file (0600)
// when missing, so SQLite never creates them with the umask's modes, and
// checks the directory takes new files (SQLite creates -wal and -shm
// beside the database).
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory %s: %w (create it writable by this user, or set BTY_STATE_DIR to a writable directory)", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".bty-write-test-*")
	if err != nil {
		return fmt.Errorf("state directory %s is not writable: %w (make it writable by this user, or set BTY_STATE_DIR to a writable directory)", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	// An existing file must already be an SQLite database: a fresh schema
	// over an empty or foreign file would start an empty fleet (every
	// machine gone, a new admin password) without a word.
	if _, err := os.Lstat(path); err == nil {
		return checkExisting(path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("opening state database %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return checkExisting(path) // another process created it meanwhile
	}
	if err != nil {
		return openFileError(path, err)
	}
	defer f.Close()
	_, err = regularFile(f, path)
	return err
}

// openFileError says why the state database could not be opened.
func openFileError(path string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("state database %s is not writable: %w (fix its owner or mode, or set BTY_STATE_DIR to another directory)", path, err)
	}
	return fmt.Errorf("opening state database %s: %w", path, err)
}

// regularFile returns f's info, or an error when it is not a regular file.
func regularFile(f *os.File, path string) (fs.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening state database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("state database %s is not a regular file", path)
	}
	return fi, nil
}

// sqliteHeader starts every SQLite database file.
const sqliteHeader = "SQLite format 3\x00"

// checkExisting refuses an existing state database that is not a regular,
// writable SQLite file, and leaves the file as it is.
func checkExisting(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return openFileError(path, err)
	}
	defer f.Close()
	fi, err := regularFile(f, path)
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return fmt.Errorf("state database %s exists but is empty (0 bytes): it is not a bty state database, "+
			"and bty-web will not start a new fleet over it; restore it from a backup, "+
			"or move it away to start a new fleet (bty-web creates a new database where none exists)", path)
	}
	head := make([]byte, len(sqliteHeader))
	if _, err := io.ReadFull(f, head); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("state database %s: reading its header: %w (is the disk failing? restore it from a backup)", path, err)
	}
	if string(head) != sqliteHeader {
		return fmt.Errorf("state database %s (%d bytes) is not an SQLite database (it does not start with the SQLite header): "+
			"it is not a bty-web database or is damaged; restore it from a backup, "+
			"or move it away to start a new fleet", path, fi.Size())
	}
	return nil
}

// setup checks WAL took effect and applies migrations.
func (s *SQLite) setup(ctx context.Context) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return s.openError(err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("state database %s: journal mode is %q, not WAL (is it on a network filesystem? put BTY_STATE_DIR on a local disk)", s.path, mode)
	}
	if err := s.quickCheck(ctx); err != nil {
		return err
	}
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		return err
	}
	if err := migrate(ctx, s.w, s.path, ms, s.logger); err != nil {
		var tooNew *SchemaTooNewError
		if errors.As(err, &tooNew) {
			return err
		}
		return s.openError(err)
	}
	return nil
}

// quickCheck runs PRAGMA quick_check (the b-tree structure of every
// table and index, without the slower index-content cross-check of
// integrity_check) and refuses a damaged database before anything is
// written to it.
func (s *SQLite) quickCheck(ctx context.Context) error {
	const remedy = "the file is damaged: stop bty-web, move it (with any -wal and -shm files beside it) aside " +
		"and restore it from a backup, or set BTY_STATE_DIR elsewhere to start a new fleet"
	rows, err := s.w.QueryContext(ctx, "PRAGMA quick_check(10)")
	if err != nil {
		return fmt.Errorf("state database %s: SQLite's quick_check (PRAGMA quick_check) failed: %w; %s", s.path, err, remedy)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("state database %s: SQLite's quick_check (PRAGMA quick_check) failed: %w; %s", s.path, err, remedy)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("state database %s: SQLite's quick_check (PRAGMA quick_check) failed: %w; %s", s.path, err, remedy)
	}
	if len(problems) > 0 {
		return fmt.Errorf("state database %s failed SQLite's quick_check (PRAGMA quick_check): %s; %s",
			s.path, strings.Join(problems, "; "), remedy)
	}
	return nil
}

// openError explains the SQLite errors an operator can act on.
func (s *SQLite) openError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("state database %s: %w (it is not a bty-web database or is damaged: move it aside and restore a backup, or set BTY_STATE_DIR elsewhere)", s.path, err)
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
			return fmt.Errorf("state database %s: %w (make the file and its directory writable by this user, or set BTY_STATE_DIR)", s.path, err)
		case sqlite3.SQLITE_BUSY:
			return fmt.Errorf("state database %s: %w (another process holds a lock on it: is a second bty-web running on it?)", s.path, err)
		}
	}
	return fmt.Errorf("state database %s: %w", s.path, err)
}

// Path is the database file's absolute path.
func (s *SQLite) Path() string { return s.path }

// dbError wraps a database failure with the file and the operation.
// store.ErrNotFound, validation errors, context errors and errors already
// wrapped pass through unchanged.
func (s *SQLite) dbError(op string, err error) error {
	var de *dbErr
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, store.ErrNotFound) || fleet.IsValidation(err) || errors.As(err, &de) {
		return err
	}
	return &dbErr{path: s.path, op: op, err: err}
}

type dbErr struct {
	path, op string
	err      error
}

func (e *dbErr) Error() string { return fmt.Sprintf("state database %s: %s: %v", e.path, e.op, e.err) }
func (e *dbErr) Unwrap() error { return e.err }

// Ping checks both pools answer a query.
func (s *SQLite) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return s.dbError("ping", err)
	}
	return nil
}

// Close closes both pools. The last connection to close checkpoints the
// WAL into the database file.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *SQLite) close() error {
	var errs []error
	if s.wr != nil {
		errs = append(errs, s.wr.close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}
