package sqlitestore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

func checkTokenHash(h []byte) error {
	if len(h) != sha256.Size {
		return &fleet.ValidationError{Field: "token_hash", Msg: fmt.Sprintf("is %d bytes, want a %d-byte SHA-256", len(h), sha256.Size)}
	}
	return nil
}

// CreateSession stores a token hash with its expiry, and purges expired
// sessions in the same transaction (so the table stays as small as the
// number of live sessions without a background job).
func (s *SQLite) CreateSession(ctx context.Context, tokenHash []byte, expires, now time.Time) error {
	if err := checkTokenHash(tokenHash); err != nil {
		return err
	}
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, formatTime(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO sessions (token_hash, expires_at, created_at) VALUES (?, ?, ?)`,
			tokenHash, formatTime(expires), formatTime(now))
		return err
	})
	if err != nil {
		return s.dbError("creating session", err)
	}
	return nil
}

// SessionValid reports whether tokenHash is stored and expires after now.
func (s *SQLite) SessionValid(ctx context.Context, tokenHash []byte, now time.Time) (bool, error) {
	if len(tokenHash) != sha256.Size {
		return false, nil
	}
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM sessions WHERE token_hash = ? AND expires_at > ?`,
		tokenHash, formatTime(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.dbError("checking session", err)
	}
	return true, nil
}

// RevokeSession deletes one session; revoking an unknown one is no error
// (logging out twice is fine).
func (s *SQLite) RevokeSession(ctx context.Context, tokenHash []byte) error {
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, tokenHash)
		return err
	})
	if err != nil {
		return s.dbError("revoking session", err)
	}
	return nil
}

// RevokeAllSessions deletes every session and says how many there were
// (expired ones not yet purged included).
func (s *SQLite) RevokeAllSessions(ctx context.Context) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions`)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.dbError("revoking sessions", err)
	}
	return int(n), nil
}

// Setting returns a setting's value, store.ErrNotFound when unset.
func (s *SQLite) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("setting %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", s.dbError("reading setting "+key, err)
	}
	return v, nil
}

// SetSetting stores a setting.
func (s *SQLite) SetSetting(ctx context.Context, key, value string, now time.Time) error {
	if key == "" {
		return &fleet.ValidationError{Field: "key", Msg: "setting key is empty"}
	}
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			key, value, formatTime(now))
		return err
	})
	if err != nil {
		return s.dbError("writing setting "+key, err)
	}
	return nil
}

// ImageHash returns the cached sha256 of image name if it was computed
// for a file of this size and modification time; store.ErrNotFound otherwise.
func (s *SQLite) ImageHash(ctx context.Context, name string, size int64, mtime time.Time) (string, error) {
	var h string
	err := s.r.QueryRowContext(ctx, `SELECT sha256 FROM image_hashes WHERE name = ? AND size = ? AND mtime = ?`,
		name, size, formatTime(mtime)).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("image hash of %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return "", s.dbError("reading image hash of "+name, err)
	}
	return h, nil
}

// SetImageHash caches the sha256 of image name at this size and
// modification time, replacing any older entry for the name.
func (s *SQLite) SetImageHash(ctx context.Context, name string, size int64, mtime time.Time, sum string) error {
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO image_hashes (name, size, mtime, sha256, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET size = excluded.size, mtime = excluded.mtime,
				sha256 = excluded.sha256, updated_at = excluded.updated_at`,
			name, size, formatTime(mtime), sum, formatTime(time.Now()))
		return err
	})
	if err != nil {
		return s.dbError("writing image hash of "+name, err)
	}
	return nil
}
