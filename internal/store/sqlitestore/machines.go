package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// machineCols is the column list scanMachine reads, in its order.
const machineCols = `mac, image, provisioning_mode, hostname, cijoe_workflow_ref, last_known_good,
	discovered_at, last_seen_at, last_seen_ip, boot_policy, next_boot, last_flashed_at,
	last_workflow_run_at, last_workflow_status, last_workflow_output_path, created_at, updated_at,
	last_failed_at, last_failure, user_data, meta_data, last_served,
	cycle_token_hash, cycle_ip, cycle_started_at, cycle_expires_at, cycle_seed_served,
	last_conflict_at, last_conflict_ip, power, ready_check, flash_deadline, flash,
	cijoe_ssh_user, cijoe_ssh_port, cijoe_timeout, labels,
	health_every, health_fail_after, health, recovery, quarantine,
	inventory, inventory_at`

// storedPower is a machine's power column: fleet.Power with its
// password, which fleet.Power's own JSON leaves out.
type storedPower struct {
	Driver      string `json:"driver"`
	Address     string `json:"address"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	CipherSuite int    `json:"cipher_suite,omitempty"`
	System      string `json:"system,omitempty"`
	Insecure    bool   `json:"insecure,omitempty"`
}

func encodePower(p *fleet.Power) string {
	if p == nil {
		return ""
	}
	sp := storedPower{Driver: p.Driver, Address: p.Address, Username: p.Username, Password: p.Password,
		CipherSuite: p.CipherSuite, System: p.System, Insecure: p.Insecure}
	b, _ := json.Marshal(sp) // strings, an int and a bool always encode
	return string(b)
}

func decodePower(s string) (*fleet.Power, error) {
	if s == "" {
		return nil, nil
	}
	var sp storedPower
	if err := json.Unmarshal([]byte(s), &sp); err != nil {
		return nil, fmt.Errorf("its power column is not JSON: %w", err)
	}
	return &fleet.Power{Driver: sp.Driver, Address: sp.Address, Username: sp.Username, Password: sp.Password,
		CipherSuite: sp.CipherSuite, System: sp.System, Insecure: sp.Insecure, PasswordSet: sp.Password != ""}, nil
}

// machinePlaceholders is one "?" per column of machineCols.
var machinePlaceholders = strings.TrimSuffix(strings.Repeat("?, ", strings.Count(machineCols, ",")+1), ", ")

type scanner interface{ Scan(dest ...any) error }

func scanMachine(sc scanner) (fleet.Machine, error) {
	var (
		m                                          fleet.Machine
		mac, mode, policy, next, served            string
		discovered, seen, flashed, wfRun, wfStatus sql.NullString
		failed                                     sql.NullString
		created, updated                           string
		cycleHash, cycleStart, cycleEnd, conflict  sql.NullString
		cycleIP                                    string
		seedServed                                 int
		powerJSON, readyCheck, flashJSON, lkg      string
		labelsJSON                                 string
		health, recovery, quarantine               string
		inventory                                  string
		inventoryAt                                sql.NullString
	)
	if err := sc.Scan(&mac, &m.Image, &mode, &m.Hostname, &m.CijoeWorkflowRef, &lkg,
		&discovered, &seen, &m.LastSeenIP, &policy, &next, &flashed,
		&wfRun, &wfStatus, &m.LastWorkflowOutputPath, &created, &updated, &failed, &m.LastFailure,
		&m.UserData, &m.MetaData, &served,
		&cycleHash, &cycleIP, &cycleStart, &cycleEnd, &seedServed, &conflict, &m.LastConflictIP, &powerJSON,
		&readyCheck, &m.FlashDeadline, &flashJSON, &m.CijoeSSHUser, &m.CijoeSSHPort, &m.CijoeTimeout, &labelsJSON,
		&m.HealthEvery, &m.HealthFailAfter, &health, &recovery, &quarantine,
		&inventory, &inventoryAt); err != nil {
		return fleet.Machine{}, err
	}
	var err error
	if m.MAC, err = fleet.ParseMAC(mac); err != nil {
		return fleet.Machine{}, fmt.Errorf("a stored machine's key: %w", err)
	}
	if labelsJSON != "" {
		if err := json.Unmarshal([]byte(labelsJSON), &m.Labels); err != nil {
			return fleet.Machine{}, fmt.Errorf("machine %s: its labels column: %w", m.MAC, err)
		}
	}
	for _, c := range []struct {
		name string
		src  string
		dst  any
	}{{"health", health, &m.Health}, {"recovery", recovery, &m.Recovery}, {"quarantine", quarantine, &m.Quarantine},
		{"inventory", inventory, &m.Inventory}} {
		if c.src == "" {
			continue
		}
		if err := json.Unmarshal([]byte(c.src), c.dst); err != nil {
			return fleet.Machine{}, fmt.Errorf("machine %s: its %s column: %w", m.MAC, c.name, err)
		}
	}
	if m.LastKnownGood, err = decodeKnownGood(lkg); err != nil {
		return fleet.Machine{}, fmt.Errorf("machine %s: its last_known_good column: %w", m.MAC, err)
	}
	m.ProvisioningMode, m.BootPolicy, m.NextBoot, m.LastServed = fleet.Mode(mode), fleet.Policy(policy), fleet.NextBoot(next), fleet.Policy(served)
	for _, f := range []struct {
		dst **time.Time
		src sql.NullString
	}{{&m.DiscoveredAt, discovered}, {&m.LastSeenAt, seen}, {&m.LastFlashedAt, flashed}, {&m.LastWorkflowRunAt, wfRun}, {&m.LastFailedAt, failed}, {&m.LastConflictAt, conflict},
		{&m.InventoryAt, inventoryAt}} {
		if *f.dst, err = parseNullTime(f.src); err != nil {
			return fleet.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
		}
	}
	if m.Power, err = decodePower(powerJSON); err != nil {
		return fleet.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	m.ReadyCheck = fleet.ReadyCheck(readyCheck)
	m.DerivedLabels = m.Inventory.DerivedLabels()
	if flashJSON != "" {
		f, err := decodeFlash(flashJSON)
		if err != nil {
			return fleet.Machine{}, fmt.Errorf("machine %s: its flash column: %w", m.MAC, err)
		}
		m.Flash = &f
	}
	if cycleHash.Valid {
		c := fleet.Cycle{TokenHash: cycleHash.String, IP: cycleIP,
			UserDataServed: seedServed&1 != 0, MetaDataServed: seedServed&2 != 0}
		for _, f := range []struct {
			dst *time.Time
			src sql.NullString
		}{{&c.StartedAt, cycleStart}, {&c.ExpiresAt, cycleEnd}} {
			if *f.dst, err = parseTime(f.src.String); err != nil {
				return fleet.Machine{}, fmt.Errorf("machine %s: flash cycle: %w", m.MAC, err)
			}
		}
		m.Cycle = &c
	}
	if wfStatus.Valid {
		st := fleet.WorkflowStatus(wfStatus.String)
		m.LastWorkflowStatus = &st
	}
	if m.CreatedAt, err = parseTime(created); err != nil {
		return fleet.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	if m.UpdatedAt, err = parseTime(updated); err != nil {
		return fleet.Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	return m, nil
}

// ListMachines returns every machine, ordered by MAC.
func (s *SQLite) ListMachines(ctx context.Context) ([]fleet.Machine, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+machineCols+` FROM machines ORDER BY mac`)
	if err != nil {
		return nil, s.dbError("listing machines", err)
	}
	defer rows.Close()
	ms := []fleet.Machine{}
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

// GetMachine returns the machine with this MAC, or store.ErrNotFound.
func (s *SQLite) GetMachine(ctx context.Context, mac fleet.MAC) (fleet.Machine, error) {
	return s.getMachine(ctx, s.r, mac)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *SQLite) getMachine(ctx context.Context, q queryer, mac fleet.MAC) (fleet.Machine, error) {
	m, err := scanMachine(q.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE mac = ?`, mac.String()))
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Machine{}, fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
	}
	if err != nil {
		return fleet.Machine{}, s.dbError("reading machine "+mac.String(), err)
	}
	return m, nil
}

// machineValues are m's column values in machineCols order.
func machineValues(m fleet.Machine) []any {
	var wf sql.NullString
	if m.LastWorkflowStatus != nil {
		wf = sql.NullString{String: string(*m.LastWorkflowStatus), Valid: true}
	}
	var (
		cycleHash, cycleStart, cycleEnd sql.NullString
		cycleIP                         string
		seedServed                      int
	)
	if c := m.Cycle; c != nil {
		cycleHash = sql.NullString{String: c.TokenHash, Valid: true}
		cycleStart, cycleEnd, cycleIP = nullTime(&c.StartedAt), nullTime(&c.ExpiresAt), c.IP
		if c.UserDataServed {
			seedServed |= 1
		}
		if c.MetaDataServed {
			seedServed |= 2
		}
	}
	return []any{m.MAC.String(), m.Image, string(m.ProvisioningMode), m.Hostname, m.CijoeWorkflowRef, encodeKnownGood(m.LastKnownGood),
		nullTime(m.DiscoveredAt), nullTime(m.LastSeenAt), m.LastSeenIP, string(m.BootPolicy), string(m.NextBoot), nullTime(m.LastFlashedAt),
		nullTime(m.LastWorkflowRunAt), wf, m.LastWorkflowOutputPath,
		formatTime(m.CreatedAt), formatTime(m.UpdatedAt), nullTime(m.LastFailedAt), m.LastFailure,
		m.UserData, m.MetaData, string(m.LastServed),
		cycleHash, cycleIP, cycleStart, cycleEnd, seedServed, nullTime(m.LastConflictAt), m.LastConflictIP,
		encodePower(m.Power), string(m.ReadyCheck), m.FlashDeadline, encodeFlash(m.Flash),
		m.CijoeSSHUser, m.CijoeSSHPort, m.CijoeTimeout, encodeLabels(m.Labels),
		m.HealthEvery, m.HealthFailAfter, encodeState(m.Health), encodeState(m.Recovery), encodeState(m.Quarantine),
		encodeState(m.Inventory), nullTime(m.InventoryAt)}
}

// encodeState is the JSON column of a machine's health, recovery or
// quarantine state ("" for nil).
func encodeState[T any](v *T) string {
	if v == nil {
		return ""
	}
	b, _ := json.Marshal(v) // strings, ints, bools and times always encode
	return string(b)
}

// insertMachine writes a new record, every column from m.
func insertMachine(ctx context.Context, tx dbtx, m fleet.Machine) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO machines (`+machineCols+`)
		VALUES (`+machinePlaceholders+`)`, machineValues(m)...)
	if err != nil {
		return err
	}
	if err := writeLabels(ctx, tx, m.MAC, m.AllLabels()); err != nil {
		return err
	}
	return linkNICs(ctx, tx, m)
}

// updateMachine rewrites every column of m's row, its label rows when
// its labels (its own and the derived ones: fleet.Machine.AllLabels)
// differ from before's (the record as read in this transaction), and
// its NIC links when a new inventory came (a NIC another record had
// may be free now) or its NICs differ: a PXE contact writes neither.
func updateMachine(ctx context.Context, tx dbtx, before, m fleet.Machine) error {
	_, err := tx.ExecContext(ctx, `UPDATE machines SET (`+machineCols+`)
		= (`+machinePlaceholders+`) WHERE mac = ?`,
		append(machineValues(m), m.MAC.String())...)
	if err != nil {
		return err
	}
	if encodeLabels(before.AllLabels()) != encodeLabels(m.AllLabels()) {
		if err := writeLabels(ctx, tx, m.MAC, m.AllLabels()); err != nil {
			return err
		}
	}
	if !slices.Equal(nicMACs(before), nicMACs(m)) || nullTime(before.InventoryAt) != nullTime(m.InventoryAt) {
		return linkNICs(ctx, tx, m)
	}
	return nil
}

// encodeLabels is a machine's labels column: JSON (keys sorted), empty
// for none.
func encodeLabels(l fleet.Labels) string {
	if len(l) == 0 {
		return ""
	}
	b, _ := json.Marshal(l) // strings always encode
	return string(b)
}

// writeLabels replaces a machine's label rows with l.
func writeLabels(ctx context.Context, tx dbtx, mac fleet.MAC, l fleet.Labels) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM machine_labels WHERE mac = ?`, mac.String()); err != nil {
		return err
	}
	for k, v := range l {
		if _, err := tx.ExecContext(ctx, `INSERT INTO machine_labels (mac, key, value) VALUES (?, ?, ?)`, mac.String(), k, v); err != nil {
			return err
		}
	}
	return nil
}

// ModifyMachine reads the machine, calls fn and writes what it returns,
// in one write transaction: the store's one writer runs writes one at a
// time, so nothing writes the record between the read and the write.
func (s *SQLite) ModifyMachine(ctx context.Context, mac fleet.MAC, fn func(m fleet.Machine, found bool) (fleet.Machine, error)) (fleet.Machine, error) {
	if mac.IsZero() {
		return fleet.Machine{}, &fleet.ValidationError{Field: "mac", Msg: "no MAC given"}
	}
	var (
		out   fleet.Machine
		fnErr error
	)
	err := s.write(ctx, func(ctx context.Context, tx dbtx) error {
		m, err := s.getMachine(ctx, tx, mac)
		found := err == nil
		switch {
		case errors.Is(err, store.ErrNotFound):
			m = fleet.Machine{}
		case err != nil:
			return err
		}
		if out, fnErr = fn(m, found); fnErr != nil {
			return fnErr
		}
		if out.MAC != mac {
			return fmt.Errorf("machine %s: the change would rename it to %q", mac, out.MAC)
		}
		out.DerivedLabels = out.Inventory.DerivedLabels()
		if out.Replaced != nil {
			if _, err := writeFlash(ctx, tx, nil, out.Replaced); err != nil {
				return err
			}
			out.Replaced = nil
		}
		if out.Flash, err = writeFlash(ctx, tx, m.Flash, out.Flash); err != nil {
			return err
		}
		if !found {
			return insertMachine(ctx, tx, out)
		}
		return updateMachine(ctx, tx, m, out)
	})
	if fnErr != nil {
		return fleet.Machine{}, fnErr
	}
	if err != nil {
		return fleet.Machine{}, s.dbError("writing machine "+mac.String(), err)
	}
	return out, nil
}

// DeleteMachine removes a machine; store.ErrNotFound when there is none.
func (s *SQLite) DeleteMachine(ctx context.Context, mac fleet.MAC) error {
	return s.write(ctx, func(ctx context.Context, tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE mac = ?`, mac.String())
		if err != nil {
			return s.dbError("deleting machine "+mac.String(), err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM flashes WHERE mac = ?`, mac.String()); err != nil {
			return s.dbError("deleting machine "+mac.String()+"'s flash history", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM machine_labels WHERE mac = ?`, mac.String()); err != nil {
			return s.dbError("deleting machine "+mac.String()+"'s labels", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM machine_nics WHERE machine = ?`, mac.String()); err != nil {
			return s.dbError("deleting machine "+mac.String()+"'s NIC links", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE mac = ?`, mac.String()); err != nil {
			return s.dbError("deleting machine "+mac.String()+"'s workflow runs", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM actions WHERE mac = ?`, mac.String()); err != nil {
			return s.dbError("deleting machine "+mac.String()+"'s automation history", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return s.dbError("deleting machine "+mac.String(), err)
		} else if n == 0 {
			return fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		}
		return nil
	})
}

// ImportMachines replaces or inserts whole records in one transaction.
func (s *SQLite) ImportMachines(ctx context.Context, ms []fleet.Machine) error {
	now := time.Now()
	for i := range ms {
		m, err := ms[i].ForImport(now)
		if err != nil {
			return err
		}
		ms[i] = m
	}
	return s.dbErrorOrNil("importing machines", s.write(ctx, func(ctx context.Context, tx dbtx) error {
		for _, m := range ms {
			if _, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE mac = ?`, m.MAC.String()); err != nil {
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
