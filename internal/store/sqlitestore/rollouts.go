package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Rollouts (docs/reference.md, "Rollouts"): a row per rollout, its JSON
// in doc.

func encodeRollout(r fleet.Rollout) string {
	b, _ := json.Marshal(r) // strings, ints and times: always encodes
	return string(b)
}

func scanRollouts(rows *sql.Rows) ([]fleet.Rollout, error) {
	defer rows.Close()
	out := []fleet.Rollout{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var r fleet.Rollout
		if err := json.Unmarshal([]byte(doc), &r); err != nil {
			return nil, fmt.Errorf("not a rollout's JSON: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// SaveRollout writes r, inserting it with a new ID when r.ID is 0.
func (s *SQLite) SaveRollout(ctx context.Context, r fleet.Rollout) (fleet.Rollout, error) {
	op := fmt.Sprintf("saving rollout %d", r.ID)
	out := r
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		out = r
		active := 0
		if r.Active() {
			active = 1
		}
		if out.ID == 0 {
			res, err := tx.ExecContext(ctx, `INSERT INTO rollouts (state, active, doc) VALUES (?, ?, '')`, string(r.State), active)
			if err != nil {
				return s.dbError(op, err)
			}
			if out.ID, err = res.LastInsertId(); err != nil {
				return s.dbError(op, err)
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, active = ?, doc = ? WHERE id = ?`,
			string(out.State), active, encodeRollout(out), out.ID)
		if err != nil {
			return s.dbError(op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.dbError(op, err)
		} else if n == 0 {
			return fmt.Errorf("rollout %d: %w", out.ID, store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fleet.Rollout{}, err
	}
	return out, nil
}

// GetRollout returns one rollout, or store.ErrNotFound.
func (s *SQLite) GetRollout(ctx context.Context, id int64) (fleet.Rollout, error) {
	op := fmt.Sprintf("reading rollout %d", id)
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM rollouts WHERE id = ?`, id)
	if err != nil {
		return fleet.Rollout{}, s.dbError(op, err)
	}
	rs, err := scanRollouts(rows)
	if err != nil {
		return fleet.Rollout{}, s.dbError(op, err)
	}
	if len(rs) == 0 {
		return fleet.Rollout{}, fmt.Errorf("rollout %d: %w", id, store.ErrNotFound)
	}
	return rs[0], nil
}

// ListRollouts returns the newest rollouts first, at most limit (0: all).
func (s *SQLite) ListRollouts(ctx context.Context, limit int) ([]fleet.Rollout, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM rollouts ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, s.dbError("listing rollouts", err)
	}
	rs, err := scanRollouts(rows)
	return rs, s.dbErrorOrNil("listing rollouts", err)
}

// ActiveRollouts returns the rollouts bty-web must still advance
// (fleet.Rollout.Active), oldest first.
func (s *SQLite) ActiveRollouts(ctx context.Context) ([]fleet.Rollout, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM rollouts WHERE active = 1 ORDER BY id`)
	if err != nil {
		return nil, s.dbError("listing active rollouts", err)
	}
	rs, err := scanRollouts(rows)
	return rs, s.dbErrorOrNil("listing active rollouts", err)
}
