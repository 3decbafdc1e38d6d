package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// Backup writes a consistent copy of the database to path with SQLite's
// VACUUM INTO, while writes go on: it runs in one read transaction on a
// connection of its own (the pool's are query_only, which VACUUM INTO
// refuses), which sees one snapshot of the WAL, so the copy holds every
// write committed before Backup started and none half-done.
//
// The copy is written to a temporary file (0600) beside path, synced,
// and then linked into place, so path is either absent or a complete
// database. An existing path is refused unless overwrite is set (then
// it is replaced atomically by rename). The directory is synced too.
func (s *SQLite) Backup(ctx context.Context, path string, overwrite bool) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if abs == s.path || abs == s.path+"-wal" || abs == s.path+"-shm" {
		return fmt.Errorf("backup to %s: that is the state database itself; name another file", abs)
	}
	if !overwrite {
		if _, err := os.Lstat(abs); err == nil {
			return fmt.Errorf("backup to %s: the file exists; name a new file (nothing was written)", abs)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("backup to %s: %w", abs, err)
		}
	}
	dir := filepath.Dir(abs)
	// VACUUM INTO accepts an empty existing file; creating it here
	// gives the copy mode 0600 (it holds the password hash).
	tmp, err := os.CreateTemp(dir, ".state-backup-*.tmp")
	if err != nil {
		return fmt.Errorf("backup to %s: %w", abs, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op once linked or renamed away

	db, err := s.oneConn(false)
	if err != nil {
		return fmt.Errorf("backup to %s: %w", abs, err)
	}
	_, err = db.ExecContext(ctx, "VACUUM INTO ?", tmpName)
	db.Close()
	if err != nil {
		return fmt.Errorf("backup to %s: %w", abs, s.dbError("VACUUM INTO", err))
	}
	if err := syncFile(tmpName); err != nil {
		return fmt.Errorf("backup to %s: syncing the copy: %w", abs, err)
	}
	if overwrite {
		err = os.Rename(tmpName, abs)
	} else {
		// link fails on an existing name, so a file made meanwhile is
		// never replaced.
		err = os.Link(tmpName, abs)
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("backup to %s: the file exists; name a new file (nothing was written)", abs)
		}
		return fmt.Errorf("backup to %s: %w", abs, err)
	}
	if err := syncFile(dir); err != nil {
		return fmt.Errorf("backup to %s: syncing its directory: %w", abs, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// maxIntegrityProblems bounds the problems IntegrityCheck returns.
const maxIntegrityProblems = 100

// IntegrityCheck runs SQLite's PRAGMA integrity_check (every page,
// b-tree and index entry; slower than the quick_check Open runs) and
// returns the problems it reports, none for a sound database. An error
// means the check itself could not run (SQLite may answer a badly
// damaged file with SQLITE_CORRUPT instead of a list). It reads the
// file through a new connection, so no page cached by the pool hides
// damage on disk.
func (s *SQLite) IntegrityCheck(ctx context.Context) ([]string, error) {
	db, err := s.oneConn(true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, fmt.Sprintf("PRAGMA integrity_check(%d)", maxIntegrityProblems))
	if err != nil {
		return nil, s.dbError("integrity_check", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, s.dbError("integrity_check", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbError("integrity_check", err)
	}
	return problems, nil
}

// oneConn is a new single-connection pool on the database, for a
// backup or a check, to be closed after.
func (s *SQLite) oneConn(queryOnly bool) (*sql.DB, error) {
	pragmas := []string{fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS)}
	if queryOnly {
		pragmas = append(pragmas, "query_only(1)")
	}
	db, err := sql.Open("sqlite", dsn(s.path, url.Values{"_pragma": pragmas}))
	if err != nil {
		return nil, fmt.Errorf("state database %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}
