package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one embedded migrations/NNNN_name.sql file.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations in version order, and
// refuses a set with a gap or a duplicate (a packaging mistake).
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", base)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d (versions must be 1, 2, 3, ... without gaps)", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this binary creates and expects.
func SchemaVersion() int {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		return 0
	}
	return len(ms)
}

// SchemaTooNewError: the database was written by a newer bty-web.
type SchemaTooNewError struct {
	Path          string
	Version, Have int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database %s has schema version %d but this bty-web knows only up to %d: "+
		"run the newer bty-web that wrote it, or restore a backup made by this version", e.Path, e.Version, e.Have)
}

// migrate brings the database on the write connection db up to date, one
// transaction per migration, each recorded in schema_version. It reads
// the version again inside each transaction (BEGIN IMMEDIATE), so two
// processes opening one database at once apply each migration once.
func migrate(ctx context.Context, db *sql.DB, dbPath string, ms []migration, logger *slog.Logger) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_version: %w", err)
	}
	for {
		done, err := migrateOne(ctx, db, dbPath, ms, logger)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the next pending migration; done when none is.
func migrateOne(ctx context.Context, db *sql.DB, dbPath string, ms []migration, logger *slog.Logger) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
		return false, fmt.Errorf("reading schema version: %w", err)
	}
	if cur > len(ms) {
		return false, &SchemaTooNewError{Path: dbPath, Version: cur, Have: len(ms)}
	}
	if cur == len(ms) {
		return true, nil
	}
	m := ms[cur]
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("applying migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, formatTime(time.Now())); err != nil {
		return false, fmt.Errorf("recording migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing migration %s: %w", m.name, err)
	}
	logger.Info("applied database migration", "path", dbPath, "version", m.version, "name", m.name)
	return false, nil
}
