// Package store keeps bty-web's fleet state: machines, sessions and
// settings. Callers use the Store interface; store/sqlitestore (embedded
// SQLite, the default) implements it, and a PostgreSQL implementation can
// be added beside it without changing callers.
//
// A Store reads and writes records; it decides nothing. The fleet's
// rules (what a PXE contact is served, what a done changes) are
// internal/fleet's pure functions, which this package's operations run
// inside ModifyMachine's one transaction, so every backend applies the
// same rule the same way.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// ErrNotFound: no such machine (or setting).
var ErrNotFound = errors.New("not found")

// ErrLimit: a create would pass a stored limit (CreateSchedule's max).
var ErrLimit = errors.New("limit reached")

// Store is bty-web's state. Every method is safe for concurrent use;
// every write is one transaction, durable when the method returns.
type Store interface {
	// ListMachines returns every machine, by MAC (an empty slice, never
	// nil, when there are none).
	ListMachines(ctx context.Context) ([]fleet.Machine, error)
	// QueryMachines returns one page of the machines matching q's
	// filter, in q's order, with the number of machines and of matches,
	// all read from one snapshot of the database. The filter, the order
	// and the page are the database's work: it never loads every record.
	QueryMachines(ctx context.Context, q MachineQuery) (MachinePage, error)
	// GetMachine returns ErrNotFound for an unknown MAC.
	GetMachine(ctx context.Context, mac fleet.MAC) (fleet.Machine, error)
	// ModifyMachine is the read-modify-write of one record, in one
	// transaction (the record's latest flash, Machine.Flash, is written
	// to the flash history in it too; a new flash, ID 0, gets its ID): it reads the machine (found false and a zero record
	// when there is none), calls fn, and writes the record fn returns
	// (inserting it when not found), unless fn returns an error, which
	// is returned as it is and writes nothing. No other write to the
	// machine happens between the read and the write (SQLite: the one
	// writer; PostgreSQL: SELECT ... FOR UPDATE). fn may run more than
	// once and must not have side effects.
	ModifyMachine(ctx context.Context, mac fleet.MAC, fn func(m fleet.Machine, found bool) (fleet.Machine, error)) (fleet.Machine, error)
	// DeleteMachine returns ErrNotFound for an unknown MAC.
	DeleteMachine(ctx context.Context, mac fleet.MAC) error
	// MachineByNIC returns the MAC of the machine whose inventory
	// linked nic as one of its other NICs (docs/reference.md,
	// "Inventory"), ErrNotFound when none did. A linked MAC is never a
	// record's own: writing a record for it removes the link.
	MachineByNIC(ctx context.Context, nic fleet.MAC) (fleet.MAC, error)

	// CreateSession stores a session token's SHA-256 with its expiry.
	CreateSession(ctx context.Context, tokenHash []byte, expires, now time.Time) error
	// SessionValid reports whether a token hash is stored and unexpired.
	SessionValid(ctx context.Context, tokenHash []byte, now time.Time) (bool, error)
	// RevokeSession deletes one session; RevokeAllSessions every one.
	RevokeSession(ctx context.Context, tokenHash []byte) error
	RevokeAllSessions(ctx context.Context) (int, error)

	// Setting returns ErrNotFound when unset; SetSetting stores one
	// (the admin password hash, proxy-DHCP interface and subnet).
	Setting(ctx context.Context, key string) (string, error)
	SetSetting(ctx context.Context, key, value string, now time.Time) error

	// ImageHash returns a cached sha256 for an image file of this size
	// and modification time (ErrNotFound when not cached or stale);
	// SetImageHash caches one.
	ImageHash(ctx context.Context, name string, size int64, mtime time.Time) (string, error)
	SetImageHash(ctx context.Context, name string, size int64, mtime time.Time, sha256 string) error

	// ListFlashes returns one page of flashes, newest first: the
	// machine's, or every machine's for a zero MAC, with the number of
	// them. RunningFlashes returns every flash in progress. GetFlash
	// returns ErrNotFound for an unknown id. FlashesSince returns the
	// flashes requested at or after since, oldest first, at most limit.
	ListFlashes(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Flash, int, error)
	RunningFlashes(ctx context.Context) ([]fleet.Flash, error)
	GetFlash(ctx context.Context, id int64) (fleet.Flash, error)
	FlashesSince(ctx context.Context, since time.Time, limit int) ([]fleet.Flash, error)

	// SaveRun writes workflow run r (inserting it, with a new ID, when
	// r.ID is 0) and, in the same transaction, the record of its
	// machine as fn returns it (fn gets the record and the run with its
	// ID; it must not have side effects and may run more than once). A
	// run of an unknown machine is ErrNotFound and writes nothing.
	SaveRun(ctx context.Context, r fleet.Run, fn func(m fleet.Machine, r fleet.Run) fleet.Machine) (fleet.Run, fleet.Machine, error)
	// ListRuns returns one page of a machine's runs (every machine's for
	// a zero MAC), newest first, with their number. GetRun returns
	// ErrNotFound for an unknown id. UnfinishedRuns returns every run
	// queued or running, oldest first.
	ListRuns(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Run, int, error)
	GetRun(ctx context.Context, id int64) (fleet.Run, error)
	UnfinishedRuns(ctx context.Context) ([]fleet.Run, error)

	// SaveAction inserts an automation step (fleet.Action) with a new
	// ID. ListActions returns one page of a machine's actions (every
	// machine's for a zero MAC), newest first, with their number.
	// CountActions counts a machine's actions of one kind at or after
	// since.
	SaveAction(ctx context.Context, a fleet.Action) (fleet.Action, error)
	ListActions(ctx context.Context, mac fleet.MAC, limit, offset int) ([]fleet.Action, int, error)
	CountActions(ctx context.Context, mac fleet.MAC, a fleet.RecoveryAction, since time.Time) (int, error)
	// ImportMachines writes whole records (every field, timestamps
	// included) in one transaction, replacing records with the same
	// MAC: restoring an export. Every record is checked first
	// (fleet.Machine.ForImport).
	ImportMachines(ctx context.Context, ms []fleet.Machine) error

	// Schedules (docs/reference.md, "Schedules"). CreateSchedule stores
	// s with a new ID (ErrLimit when max are stored already);
	// GetSchedule, ModifySchedule and DeleteSchedule return ErrNotFound
	// for an unknown id; ListSchedules returns every schedule by ID
	// (empty, never nil). ModifySchedule is the read-modify-write of one
	// schedule in one transaction: fn's error is returned as it is and
	// writes nothing; fn may run more than once and must not have side
	// effects.
	CreateSchedule(ctx context.Context, s fleet.Schedule, max int) (fleet.Schedule, error)
	GetSchedule(ctx context.Context, id int64) (fleet.Schedule, error)
	ListSchedules(ctx context.Context) ([]fleet.Schedule, error)
	ModifySchedule(ctx context.Context, id int64, fn func(fleet.Schedule) (fleet.Schedule, error)) (fleet.Schedule, error)
	DeleteSchedule(ctx context.Context, id int64) error

	// Ping checks the database answers (GET /healthz).
	Ping(ctx context.Context) error
	Close() error

	// SaveRollout writes rollout r (inserting it, with a new ID, when
	// r.ID is 0); an unknown ID is ErrNotFound. GetRollout returns
	// ErrNotFound for an unknown id. ListRollouts returns the newest
	// first, at most limit (0: all); ActiveRollouts those bty-web must
	// still advance (fleet.Rollout.Active), oldest first
	// (docs/reference.md, "Rollouts").
	SaveRollout(ctx context.Context, r fleet.Rollout) (fleet.Rollout, error)
	GetRollout(ctx context.Context, id int64) (fleet.Rollout, error)
	ListRollouts(ctx context.Context, limit int) ([]fleet.Rollout, error)
	ActiveRollouts(ctx context.Context) ([]fleet.Rollout, error)
}

// The orders QueryMachines knows (MachineQuery.Sort); each breaks ties
// by MAC, in the same direction.
const (
	SortMAC         = "mac"          // aa:bb:... as text
	SortHostname    = "hostname"     // byte order of the text
	SortImage       = "image"        // likewise
	SortPolicy      = "policy"       // likewise (boot_policy)
	SortNextBoot    = "next_boot"    // fleet.Decide(m).Why as text
	SortLastSeen    = "last_seen"    // never seen first (ascending)
	SortLastFlashed = "last_flashed" // never flashed first (ascending)
)

// MachineSorts lists the orders QueryMachines knows.
var MachineSorts = []string{SortMAC, SortHostname, SortImage, SortPolicy, SortNextBoot, SortLastSeen, SortLastFlashed}

// MachineQuery selects a filtered, sorted page of machines. The zero
// value is every machine by MAC.
type MachineQuery struct {
	// Search keeps machines with the text, case-insensitively, in the
	// MAC (aa:bb:cc:dd:ee:ff or, with ':', '-' and '.' ignored,
	// aabbccddeeff), hostname, image or last-seen IP. "" keeps all.
	Search string
	// Policy keeps machines with this boot policy ("" any).
	Policy fleet.Policy
	// Unassigned keeps machines discovered by PXE with no image
	// (fleet.Machine.Unassigned).
	Unassigned bool
	// Selector keeps machines whose labels match every requirement
	// (nil: all).
	Selector []fleet.LabelRequirement
	// Sort is one of MachineSorts ("" is SortMAC); Desc reverses it,
	// the MAC tie-break included.
	Sort string
	Desc bool
	// After, with Sort SortMAC, starts the page after this MAC (a
	// keyset cursor: it neither repeats nor skips a machine when others
	// come and go between pages); Offset skips that many matches first.
	After  fleet.MAC
	Offset int
	// Limit bounds the page (0: no bound).
	Limit int
}

// MachinePage is one page of QueryMachines.
type MachinePage struct {
	Machines []fleet.Machine // never nil
	// Total is every machine; Matched those matching the filter (After
	// and Offset aside).
	Total, Matched int
}

// Check reports a query QueryMachines refuses: an unknown sort, a
// negative offset or limit, After with another sort than SortMAC.
func (q MachineQuery) Check() error {
	switch {
	case q.Sort != "" && !slices.Contains(MachineSorts, q.Sort):
		return &fleet.ValidationError{Field: "sort", Msg: fmt.Sprintf("%q is not one of %s", q.Sort, strings.Join(MachineSorts, ", "))}
	case q.Offset < 0:
		return &fleet.ValidationError{Field: "offset", Msg: "must not be negative"}
	case q.Limit < 0:
		return &fleet.ValidationError{Field: "limit", Msg: "must not be negative"}
	case !q.After.IsZero() && q.Sort != "" && q.Sort != SortMAC:
		return &fleet.ValidationError{Field: "after", Msg: "works only with the MAC order (sort=mac)"}
	case q.Policy != "" && !q.Policy.Valid():
		return &fleet.ValidationError{Field: "policy", Msg: fmt.Sprintf("%q is not a boot policy", q.Policy)}
	}
	return nil
}

// Contact is the outcome of one PXE contact.
type Contact struct {
	Machine fleet.Machine
	// Decision is what the contact is served (fleet.Decide).
	Decision fleet.Decision
	// Discovered is set when this contact created the record.
	Discovered bool
	// Via is the MAC that made the contact when it is another NIC of
	// Machine (Resolve), zero otherwise: the boot script names it, so
	// the live env brings up the NIC the machine booted from.
	Via fleet.MAC
}

func notFound(mac fleet.MAC) error { return fmt.Errorf("machine %s: %w", mac, ErrNotFound) }

// PXEContact records the PXE contact v and returns what it is served:
// an unknown MAC is discovered (fleet.Discover), a known one advances by
// fleet.Machine.Contact (which may open a flash cycle, or record a
// conflict).
func PXEContact(ctx context.Context, s Store, mac fleet.MAC, v fleet.Visit) (Contact, error) {
	return contact(ctx, s, mac, v, true)
}

// KnownContact is PXEContact for a known machine only: an unknown MAC is
// ErrNotFound and nothing is written (the caller decides whether it may
// be discovered).
func KnownContact(ctx context.Context, s Store, mac fleet.MAC, v fleet.Visit) (Contact, error) {
	return contact(ctx, s, mac, v, false)
}

func contact(ctx context.Context, s Store, mac fleet.MAC, v fleet.Visit, discover bool) (Contact, error) {
	rec, err := Resolve(ctx, s, mac)
	if err != nil {
		return Contact{}, err
	}
	if rec != mac {
		// Another NIC of a known machine: that machine's contact. Its
		// record may have gone since the lookup: then the MAC is
		// unknown, and discovered as any other.
		c, err := contact1(ctx, s, rec, v, false)
		if !errors.Is(err, ErrNotFound) {
			c.Via = mac
			return c, err
		}
	}
	return contact1(ctx, s, mac, v, discover)
}

// Resolve returns the MAC of the record a PXE contact or live env call
// for mac acts on: the machine that linked mac as another of its NICs
// (MachineByNIC), else mac itself. A record's own MAC is never linked,
// so a link never takes a MAC away from its record.
func Resolve(ctx context.Context, s Store, mac fleet.MAC) (fleet.MAC, error) {
	if mac.IsZero() {
		return mac, nil
	}
	rec, err := s.MachineByNIC(ctx, mac)
	switch {
	case errors.Is(err, ErrNotFound):
		return mac, nil
	case err != nil:
		return fleet.MAC{}, err
	}
	return rec, nil
}

func contact1(ctx context.Context, s Store, mac fleet.MAC, v fleet.Visit, discover bool) (Contact, error) {
	var c Contact
	m, err := s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		c = Contact{}
		if !found && !discover {
			return m, notFound(mac)
		}
		if !found {
			m, c.Decision = fleet.Discover(mac, v)
			c.Discovered = true
			return m, nil
		}
		m, c.Decision = m.Contact(v)
		return m, nil
	})
	c.Machine = m
	return c, err
}

// CycleCall is a live env's call back in its flash cycle: the token it
// sent (X-Bty-Cycle), the address it came from, and when.
type CycleCall struct {
	Token string
	IP    string
	At    time.Time
}

// refusedUnknown is the error of a call for an unknown MAC: it wraps
// fleet.ErrCycleRefused, and ErrNotFound for an unknown MAC.
func refusedUnknown(mac fleet.MAC) error {
	return fmt.Errorf("machine %s: %w (%w)", mac, fleet.ErrCycleRefused, ErrNotFound)
}

// FlashDone records a done signal (fleet.Machine.Done) if the call
// belongs to the machine's flash cycle (fleet.Machine.CheckCycle);
// otherwise it writes nothing and returns an error wrapping
// fleet.ErrCycleRefused.
func FlashDone(ctx context.Context, s Store, mac fleet.MAC, p fleet.Progress, c CycleCall) (fleet.Machine, error) {
	return inCycle(ctx, s, mac, c, func(m fleet.Machine) fleet.Machine { return m.Done(p, c.At) })
}

// RecordInventory records the live env's inventory report inv
// (fleet.Machine.Inventoried: the inventory, its time, its derived
// labels; the store links its other NICs) if the call belongs to the
// machine's flash cycle, like FlashDone. inv must have passed
// fleet.Inventory.Check.
func RecordInventory(ctx context.Context, s Store, mac fleet.MAC, inv fleet.Inventory, c CycleCall) (fleet.Machine, error) {
	return inCycle(ctx, s, mac, c, func(m fleet.Machine) fleet.Machine { return m.Inventoried(inv, c.At) })
}

// FlashProgress records the live env's progress report p
// (fleet.Machine.Progressed) if the call belongs to the machine's flash
// cycle, like FlashDone.
func FlashProgress(ctx context.Context, s Store, mac fleet.MAC, p fleet.Progress, c CycleCall) (fleet.Machine, error) {
	return inCycle(ctx, s, mac, c, func(m fleet.Machine) fleet.Machine { return m.Progressed(p, c.At) })
}

// inCycle writes fn(m) if c belongs to the machine's flash cycle
// (fleet.Machine.CheckCycle); otherwise nothing, and an error wrapping
// fleet.ErrCycleRefused.
//
// A call that does not belong to the cycle as the record reads now is
// refused before the write, without taking the store's one writer: a
// flood of refused calls on the open routes does not queue the fleet's
// writes behind it.
func inCycle(ctx context.Context, s Store, mac fleet.MAC, c CycleCall, fn func(fleet.Machine) fleet.Machine) (fleet.Machine, error) {
	mac, err := Resolve(ctx, s, mac)
	if err != nil {
		return fleet.Machine{}, err
	}
	if err := precheck(ctx, s, mac, func(m fleet.Machine) error { return m.CheckCycle(c.Token, c.IP, c.At) }); err != nil {
		return fleet.Machine{}, err
	}
	return s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, refusedUnknown(mac)
		}
		if err := m.CheckCycle(c.Token, c.IP, c.At); err != nil {
			return m, err
		}
		return fn(m), nil
	})
}

// precheck reads the machine and runs check on it: an unknown MAC or a
// refusal is returned (wrapping fleet.ErrCycleRefused) without a write;
// nil means the call may be tried in a write, which checks again.
func precheck(ctx context.Context, s Store, mac fleet.MAC, check func(fleet.Machine) error) error {
	if mac.IsZero() {
		return nil // ModifyMachine refuses it as it refuses every write
	}
	m, err := s.GetMachine(ctx, mac)
	switch {
	case errors.Is(err, ErrNotFound):
		return refusedUnknown(mac)
	case err != nil:
		return err
	}
	return check(m)
}

// PhoneHome records the flashed OS's ready report
// (fleet.Machine.PhoneHome): accepted only with the flash's token while
// it waits for ready, from any address (recorded as the OS address).
// Otherwise nothing is written and the error wraps
// fleet.ErrCycleRefused.
func PhoneHome(ctx context.Context, s Store, mac fleet.MAC, c CycleCall) (fleet.Machine, error) {
	mac, err := Resolve(ctx, s, mac)
	if err != nil {
		return fleet.Machine{}, err
	}
	if err := precheck(ctx, s, mac, func(m fleet.Machine) error { _, err := m.PhoneHome(c.Token, c.IP, c.At); return err }); err != nil {
		return fleet.Machine{}, err
	}
	return s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, refusedUnknown(mac)
		}
		return m.PhoneHome(c.Token, c.IP, c.At)
	})
}

// Reflash requests a demand flash (fleet.Machine.Reflash): ErrNotFound
// for an unknown machine, a *fleet.FlashInProgressError when one runs.
func Reflash(ctx context.Context, s Store, mac fleet.MAC, req fleet.ReflashRequest, r fleet.FlashRun) (fleet.Machine, error) {
	return s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, notFound(mac)
		}
		return m.Reflash(req, r)
	})
}

// ErrUnchanged is returned by UpdateFlash's fn to write nothing.
var ErrUnchanged = errors.New("unchanged")

// UpdateFlash applies fn (a fleet.Machine method: Powered, Cancel,
// TimeOut, Ready) to a known machine; fn returning false writes nothing
// and UpdateFlash returns ErrUnchanged.
func UpdateFlash(ctx context.Context, s Store, mac fleet.MAC, fn func(fleet.Machine) (fleet.Machine, bool)) (fleet.Machine, error) {
	return s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, notFound(mac)
		}
		m, ok := fn(m)
		if !ok {
			return m, ErrUnchanged
		}
		return m, nil
	})
}

// FlashFailed records a failure report (fleet.Machine.Failed) if the
// call belongs to the machine's flash cycle, like FlashDone.
func FlashFailed(ctx context.Context, s Store, mac fleet.MAC, reason string, c CycleCall) (fleet.Machine, error) {
	return inCycle(ctx, s, mac, c, func(m fleet.Machine) fleet.Machine { return m.Failed(reason, c.At) })
}

// ReleaseSeed marks the seed's half what ("user-data", "meta-data") as
// released in the machine's flash cycle and returns the record, if the
// call belongs to the cycle and that half was not released in it yet
// (fleet.Machine.ReleaseSeed); otherwise it writes nothing and returns
// an error wrapping fleet.ErrCycleRefused.
func ReleaseSeed(ctx context.Context, s Store, mac fleet.MAC, what string, c CycleCall) (fleet.Machine, error) {
	mac, err := Resolve(ctx, s, mac)
	if err != nil {
		return fleet.Machine{}, err
	}
	if err := precheck(ctx, s, mac, func(m fleet.Machine) error { _, err := m.ReleaseSeed(what, c.Token, c.IP, c.At); return err }); err != nil {
		return fleet.Machine{}, err
	}
	return s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, refusedUnknown(mac)
		}
		return m.ReleaseSeed(what, c.Token, c.IP, c.At)
	})
}

// PutMachine creates (fleet.NewMachine) or updates (fleet.Machine.Apply)
// a machine; created says which. u's enumerated fields are checked
// first: a bad one is a *fleet.ValidationError and nothing is written.
func PutMachine(ctx context.Context, s Store, mac fleet.MAC, u fleet.MachineUpdate, now time.Time) (m fleet.Machine, created bool, err error) {
	if errs := u.Validate(); len(errs) > 0 {
		return fleet.Machine{}, false, errs[0]
	}
	m, err = s.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		created = !found
		if !found {
			return fleet.NewMachine(mac, u, now), nil
		}
		return m.Apply(u, now), nil
	})
	return m, created, err
}
