package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// encodeKnownGood is a machine's last_known_good column: the baseline's
// JSON, empty for none.
func encodeKnownGood(k *fleet.KnownGood) string {
	if k.IsZero() {
		return ""
	}
	b, _ := json.Marshal(k) // strings, an int and a time always encode
	return string(b)
}

// decodeKnownGood reads a last_known_good column: JSON, or the image
// name versions before schema 7 kept there.
func decodeKnownGood(s string) (*fleet.KnownGood, error) {
	switch {
	case s == "":
		return nil, nil
	case !strings.HasPrefix(s, "{"):
		return &fleet.KnownGood{Image: s}, nil
	}
	var k fleet.KnownGood
	if err := json.Unmarshal([]byte(s), &k); err != nil {
		return nil, fmt.Errorf("not a baseline's JSON: %w", err)
	}
	return &k, nil
}

func encodeRun(r fleet.Run) string {
	b, _ := json.Marshal(r) // no floats: always encodes
	return string(b)
}

func scanRuns(rows *sql.Rows) ([]fleet.Run, error) {
	defer rows.Close()
	out := []fleet.Run{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var r fleet.Run
		if err := json.Unmarshal([]byte(doc), &r); err != nil {
			return nil, fmt.Errorf("not a run's JSON: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// SaveRun writes a run and its machine's record in one transaction.
func (s *SQLite) SaveRun(ctx context.Context, r fleet.Run, fn func(m fleet.Machine, r fleet.Run) fleet.Machine) (fleet.Run, fleet.Machine, error) {
	op := fmt.Sprintf("saving workflow run %d of %s", r.ID, r.MAC)
	var (
		outRun fleet.Run
		outM   fleet.Machine
	)
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		m, err := scanMachine(tx.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE mac = ?`, r.MAC.String()))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("machine %s: %w", r.MAC, store.ErrNotFound)
		}
		if err != nil {
			return s.dbError(op, err)
		}
		run := r
		if run.ID == 0 {
			res, err := tx.ExecContext(ctx, `INSERT INTO runs (mac, result, doc) VALUES (?, ?, '')`, run.MAC.String(), string(run.Result))
			if err != nil {
				return s.dbError(op, err)
			}
			if run.ID, err = res.LastInsertId(); err != nil {
				return s.dbError(op, err)
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE runs SET result = ?, doc = ? WHERE id = ? AND mac = ?`,
			string(run.Result), encodeRun(run), run.ID, run.MAC.String())
		if err != nil {
			return s.dbError(op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.dbError(op, err)
		} else if n == 0 {
			return fmt.Errorf("workflow run %d of %s: %w", run.ID, run.MAC, store.ErrNotFound)
		}
		after := m
		if fn != nil {
			after = fn(m, run)
		}
		after.MAC = m.MAC
		if err := updateMachine(ctx, tx, m, after); err != nil {
			return s.dbError(op, err)
		}
		outRun, outM = run, after
		return nil
	})
	if err != nil {
		return fleet.Run{}, fleet.Machine{}, err
	}
	return outRun, outM, nil
}

// ListRuns returns a page of runs, newest first, with their number.
func (s *SQLite) ListRuns(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Run, int, error) {
	return listDocs(ctx, s, "runs", mac, limit, offset, scanRuns)
}

// GetRun returns one run, or store.ErrNotFound.
func (s *SQLite) GetRun(ctx context.Context, id int64) (fleet.Run, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM runs WHERE id = ?`, id)
	if err != nil {
		return fleet.Run{}, s.dbError(fmt.Sprintf("reading workflow run %d", id), err)
	}
	rs, err := scanRuns(rows)
	if err != nil {
		return fleet.Run{}, s.dbError(fmt.Sprintf("reading workflow run %d", id), err)
	}
	if len(rs) == 0 {
		return fleet.Run{}, fmt.Errorf("workflow run %d: %w", id, store.ErrNotFound)
	}
	return rs[0], nil
}

// UnfinishedRuns returns the runs queued or running, oldest first.
func (s *SQLite) UnfinishedRuns(ctx context.Context) ([]fleet.Run, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT doc FROM runs WHERE result IN (?, ?) ORDER BY id`,
		string(fleet.RunQueued), string(fleet.RunRunning))
	if err != nil {
		return nil, s.dbError("listing unfinished workflow runs", err)
	}
	rs, err := scanRuns(rows)
	return rs, s.dbErrorOrNil("listing unfinished workflow runs", err)
}
