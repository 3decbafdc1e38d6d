package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btyproject/bty/internal/store"
)

// machineCols is the column list scanMachine reads, in its order.
const machineCols = `mac, image, provisioning_mode, hostname, cijoe_workflow_ref, last_known_good,
	discovered_at, last_seen_at, last_seen_ip, boot_policy, next_boot, last_flashed_at,
	last_workflow_run_at, last_workflow_status, last_workflow_output_path, created_at, updated_at,
	last_failed_at, last_failure, user_data, meta_data, last_served`

type scanner interface{ Scan(dest ...any) error }

func scanMachine(sc scanner) (store.Machine, error) {
	var (
		m                                          store.Machine
		discovered, seen, flashed, wfRun, wfStatus sql.NullString
		failed                                     sql.NullString
		created, updated                           string
	)
	if err := sc.Scan(&m.MAC, &m.Image, &m.ProvisioningMode, &m.Hostname, &m.CijoeWorkflowRef, &m.LastKnownGood,
		&discovered, &seen, &m.LastSeenIP, &m.BootPolicy, &m.NextBoot, &flashed,
		&wfRun, &wfStatus, &m.LastWorkflowOutputPath, &created, &updated, &failed, &m.LastFailure,
		&m.UserData, &m.MetaData, &m.LastServed); err != nil {
		return store.Machine{}, err
	}
	var err error
	for _, f := range []struct {
		dst **time.Time
		src sql.NullString
	}{{&m.DiscoveredAt, discovered}, {&m.LastSeenAt, seen}, {&m.LastFlashedAt, flashed}, {&m.LastWorkflowRunAt, wfRun}, {&m.LastFailedAt, failed}} {
		if *f.dst, err = parseNullTime(f.src); err != nil {
			return store.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
		}
	}
	if wfStatus.Valid {
		st := wfStatus.String
		m.LastWorkflowStatus = &st
	}
	if m.CreatedAt, err = parseTime(created); err != nil {
		return store.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	if m.UpdatedAt, err = parseTime(updated); err != nil {
		return store.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	return m, nil
}

// ListMachines returns every machine, ordered by MAC.
func (s *SQLite) ListMachines(ctx context.Context) ([]store.Machine, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+machineCols+` FROM machines ORDER BY mac`)
	if err != nil {
		return nil, s.dbError("listing machines", err)
	}
	defer rows.Close()
	ms := []store.Machine{}
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, s.dbError("listing machines", err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbError("listing machines", err)
	}
	return ms, nil
}

// GetMachine returns the machine with this (normalized) MAC, or
// store.ErrNotFound.
func (s *SQLite) GetMachine(ctx context.Context, mac string) (store.Machine, error) {
	if err := store.CheckMAC(mac); err != nil {
		return store.Machine{}, err
	}
	return s.getMachine(ctx, s.r, mac)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *SQLite) getMachine(ctx context.Context, q queryer, mac string) (store.Machine, error) {
	m, err := scanMachine(q.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE mac = ?`, mac))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
	}
	if err != nil {
		return store.Machine{}, s.dbError("reading machine "+mac, err)
	}
	return m, nil
}

// insertMachine writes a new record, every column from m.
func insertMachine(ctx context.Context, tx dbtx, m store.Machine) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO machines (`+machineCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.MAC, m.Image, m.ProvisioningMode, m.Hostname, m.CijoeWorkflowRef, m.LastKnownGood,
		nullTime(m.DiscoveredAt), nullTime(m.LastSeenAt), m.LastSeenIP, m.BootPolicy, m.NextBoot, nullTime(m.LastFlashedAt),
		nullTime(m.LastWorkflowRunAt), nullString(m.LastWorkflowStatus), m.LastWorkflowOutputPath,
		formatTime(m.CreatedAt), formatTime(m.UpdatedAt), nullTime(m.LastFailedAt), m.LastFailure,
		m.UserData, m.MetaData, m.LastServed)
	return err
}

func nullString(p *string) sql.NullString {
	if p == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *p, Valid: true}
}

// PutMachine creates a machine (boot_policy local unless u says, created
// true) or updates the fields u sets. updated_at is now on every call.
// Changing the boot policy resets next_boot to flash, so a machine put
// (back) on flash reflashes on its next contact; putting the same policy
// again leaves next_boot alone.
func (s *SQLite) PutMachine(ctx context.Context, mac string, u store.MachineUpdate, now time.Time) (store.Machine, bool, error) {
	if err := store.CheckMAC(mac); err != nil {
		return store.Machine{}, false, err
	}
	if err := store.ValidateUpdate(u); err != nil {
		return store.Machine{}, false, err
	}
	now = now.UTC()
	var (
		m       store.Machine
		created bool
	)
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		var err error
		m, err = s.getMachine(ctx, tx, mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			created = true
			m = store.Machine{MAC: mac, BootPolicy: store.PolicyLocal, NextBoot: store.NextFlash, CreatedAt: now, UpdatedAt: now}
			applyUpdate(&m, u)
			return insertMachine(ctx, tx, m)
		case err != nil:
			return err
		}
		if u.BootPolicy != nil && *u.BootPolicy != m.BootPolicy {
			m.NextBoot = store.NextFlash
		}
		applyUpdate(&m, u)
		m.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE machines SET image = ?, provisioning_mode = ?, hostname = ?,
			cijoe_workflow_ref = ?, last_known_good = ?, boot_policy = ?, next_boot = ?, updated_at = ?,
			user_data = ?, meta_data = ?
			WHERE mac = ?`,
			m.Image, m.ProvisioningMode, m.Hostname, m.CijoeWorkflowRef, m.LastKnownGood, m.BootPolicy, m.NextBoot,
			formatTime(m.UpdatedAt), m.UserData, m.MetaData, mac)
		return err
	})
	if err != nil {
		return store.Machine{}, false, s.dbError("writing machine "+mac, err)
	}
	return m, created, nil
}

func applyUpdate(m *store.Machine, u store.MachineUpdate) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&m.Image, u.Image)
	set(&m.ProvisioningMode, u.ProvisioningMode)
	set(&m.Hostname, u.Hostname)
	set(&m.CijoeWorkflowRef, u.CijoeWorkflowRef)
	set(&m.LastKnownGood, u.LastKnownGood)
	set(&m.BootPolicy, u.BootPolicy)
	set(&m.UserData, u.UserData)
	set(&m.MetaData, u.MetaData)
}

// DeleteMachine removes a machine; store.ErrNotFound when there is none.
func (s *SQLite) DeleteMachine(ctx context.Context, mac string) error {
	if err := store.CheckMAC(mac); err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE mac = ?`, mac)
		if err != nil {
			return s.dbError("deleting machine "+mac, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.dbError("deleting machine "+mac, err)
		} else if n == 0 {
			return fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		}
		return nil
	})
}

// PXEContact records a PXE contact and decides what it is served:
//
//   - unknown MAC: inserted with boot_policy tui, discovered_at = now,
//     served tui (Discovered set);
//   - tui, local: served as their policy;
//   - flash with next_boot local (the contact after a done): served
//     local once, next_boot back to flash;
//   - flash with next_boot flash: served flash.
//
// last_seen_at and last_seen_ip are set on every contact. updated_at
// changes only when the contact changes the record's state (discovery,
// next_boot advancing), not for last_seen_* alone, so it keeps meaning
// "last changed" rather than "last booted".
func (s *SQLite) PXEContact(ctx context.Context, mac, ip string, now time.Time) (store.Contact, error) {
	if err := store.CheckMAC(mac); err != nil {
		return store.Contact{}, err
	}
	now = now.UTC()
	var c store.Contact
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		m, err := s.getMachine(ctx, tx, mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			m = store.Machine{MAC: mac, BootPolicy: store.PolicyTUI, NextBoot: store.NextFlash,
				DiscoveredAt: &now, LastSeenAt: &now, LastSeenIP: ip, CreatedAt: now, UpdatedAt: now, LastServed: store.PolicyTUI}
			c = store.Contact{Machine: m, Serve: store.PolicyTUI, Discovered: true}
			return insertMachine(ctx, tx, m)
		case err != nil:
			return err
		}
		serve := store.Serves(m)
		if m.BootPolicy == store.PolicyFlash && m.NextBoot == store.NextLocal {
			m.NextBoot = store.NextFlash
			m.UpdatedAt = now
		}
		m.LastSeenAt, m.LastSeenIP, m.LastServed = &now, ip, serve
		c = store.Contact{Machine: m, Serve: serve}
		_, err = tx.ExecContext(ctx, `UPDATE machines SET last_seen_at = ?, last_seen_ip = ?, next_boot = ?, updated_at = ?,
			last_served = ? WHERE mac = ?`, formatTime(now), ip, m.NextBoot, formatTime(m.UpdatedAt), serve, mac)
		return err
	})
	if err != nil {
		return store.Contact{}, s.dbError("recording PXE contact of "+mac, err)
	}
	return c, nil
}

// FlashDone records a finished flash: last_flashed_at = now, next_boot =
// local (the next contact boots the disk once). The boot policy is left
// as it is. store.ErrNotFound for an unknown MAC.
func (s *SQLite) FlashDone(ctx context.Context, mac string, now time.Time) (store.Machine, error) {
	now = now.UTC()
	return s.updateMachine(ctx, mac, "recording flash done of "+mac,
		`last_flashed_at = ?, next_boot = ?, updated_at = ?`, formatTime(now), store.NextLocal, formatTime(now))
}

// FlashFailed records a failure report (see store.Store).
func (s *SQLite) FlashFailed(ctx context.Context, mac, reason string, now time.Time) (store.Machine, error) {
	if r := []rune(reason); len(r) > store.MaxFailureLen {
		reason = string(r[:store.MaxFailureLen])
	}
	now = now.UTC()
	return s.updateMachine(ctx, mac, "recording the flash failure of "+mac,
		`last_failed_at = ?, last_failure = ?, updated_at = ?`, formatTime(now), reason, formatTime(now))
}

// updateMachine runs UPDATE machines SET <set> for one MAC and returns
// the updated record; store.ErrNotFound when there is none. what names
// the operation in errors.
func (s *SQLite) updateMachine(ctx context.Context, mac, what, set string, args ...any) (store.Machine, error) {
	if err := store.CheckMAC(mac); err != nil {
		return store.Machine{}, err
	}
	var m store.Machine
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		var err error
		m, err = scanMachine(tx.QueryRowContext(ctx, `UPDATE machines SET `+set+` WHERE mac = ? RETURNING `+machineCols,
			append(args, mac)...))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return store.Machine{}, s.dbError(what, err)
	}
	return m, nil
}

// ImportMachines replaces or inserts whole records in one transaction.
func (s *SQLite) ImportMachines(ctx context.Context, ms []store.Machine) error {
	for i := range ms {
		m := &ms[i]
		if err := store.CheckMAC(m.MAC); err != nil {
			return err
		}
		if err := store.ValidateUpdate(store.MachineUpdate{BootPolicy: &m.BootPolicy, ProvisioningMode: &m.ProvisioningMode}); err != nil {
			return &store.ValidationError{Field: m.MAC, Msg: err.Error()}
		}
		if m.NextBoot != store.NextFlash && m.NextBoot != store.NextLocal {
			m.NextBoot = store.NextFlash
		}
		if m.LastWorkflowStatus != nil {
			switch *m.LastWorkflowStatus {
			case store.WorkflowRunning, store.WorkflowSuccess, store.WorkflowFailed:
			default:
				return &store.ValidationError{Field: m.MAC, Msg: "last_workflow_status must be running, success, failed or null"}
			}
		}
		if m.CreatedAt.IsZero() {
			m.CreatedAt = time.Now().UTC()
		}
		if m.UpdatedAt.IsZero() {
			m.UpdatedAt = m.CreatedAt
		}
	}
	return s.dbErrorOrNil("importing machines", s.write(ctx, func(ctx context.Context, tx dbtx) error {
		for _, m := range ms {
			if _, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE mac = ?`, m.MAC); err != nil {
				return err
			}
			if err := insertMachine(ctx, tx, m); err != nil {
				return err
			}
		}
		return nil
	}))
}

func (s *SQLite) dbErrorOrNil(op string, err error) error {
	if err == nil {
		return nil
	}
	return s.dbError(op, err)
}
