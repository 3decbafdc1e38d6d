package fleet

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"
)

// Flash cycles (docs/reference.md, "The flash cycle"): a PXE contact that
// is served the live env (flash or tui) opens a cycle bound to the
// contact's address, with a random token that goes on the kernel command
// line of the script it is served (bty.cycle=TOKEN). The live env's calls
// back (seed, done, failed) are accepted only with that token, from that
// address, while the cycle is open; the seed is released once per cycle.
// Another address sending the same MAC while the cycle is open is a
// conflict: it is served the local disk and changes nothing but the
// record's conflict fields.

// DefaultCycleTTL is how long a flash cycle stays open when the server
// is not told otherwise: long enough for a slow flash and the disk boot
// after it, short enough that a machine whose address changed is not
// locked out for long.
const DefaultCycleTTL = 4 * time.Hour

// CycleTokenLen is a token's length: 32 hex digits, 128 random bits.
const CycleTokenLen = 32

// Cycle is a machine's flash cycle. The token itself is never stored,
// only its sha256 (TokenHash, never on the wire).
type Cycle struct {
	TokenHash string    `json:"-"`
	IP        string    `json:"ip"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// UserDataServed and MetaDataServed say the seed's halves were
	// released in this cycle (each once).
	UserDataServed bool `json:"user_data_served"`
	MetaDataServed bool `json:"meta_data_served"`
}

// Open reports whether the cycle is open at now.
func (c *Cycle) Open(now time.Time) bool { return c != nil && now.Before(c.ExpiresAt) }

// NewCycleToken is a fresh random cycle token (CycleTokenLen hex digits).
func NewCycleToken() string {
	var b [CycleTokenLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// HashCycleToken is the stored form of a token: its sha256, in hex.
func HashCycleToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ValidCycleToken reports whether s has a token's form.
func ValidCycleToken(s string) bool {
	if len(s) != CycleTokenLen {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// Visit is one PXE contact: where from, when, and the token and
// lifetime of the flash cycle it opens if it is served the live env
// (an empty Token opens none: a contact that is not recorded).
//
// A Visit with DHCP set is a PXE firmware's DHCP request that bty's
// proxy-DHCP left without a boot file because the machine's next boot
// is its local disk (docs/reference.md, "Proxy-DHCP: no boot file for the local disk"): the machine goes
// on to its disk with no iPXE in the way, and the contact still counts
// (a flash machine's boot-the-disk-once turn is used). Its address is
// not known yet (IP is ""): it is never a conflict, last_seen_ip stays,
// and it opens no cycle.
type Visit struct {
	IP    string
	At    time.Time
	Token string
	TTL   time.Duration
	DHCP  bool
	// FlashDeadline is the server's default flash deadline, for a flash
	// this contact starts (0: DefaultFlashDeadline).
	FlashDeadline time.Duration
}

// ErrCycleRefused wraps every reason a live env call is refused
// (CheckCycle). The reason is for the server's log; the caller gets
// only "refused".
var ErrCycleRefused = errors.New("refused")

type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrCycleRefused }

// CheckCycle is nil when a live env call (seed, done, failed) carrying
// token from ip at now belongs to m's flash cycle: one is open, the
// token is its token, the address its address, and neither done nor
// failed has been reported in it. Otherwise it says why, wrapping
// ErrCycleRefused.
func (m Machine) CheckCycle(token, ip string, now time.Time) error {
	c := m.Cycle
	switch {
	case c == nil:
		return refusal("no flash cycle open (the machine was not served the live env since its last report)")
	case !c.Open(now):
		return refusal("the flash cycle expired at " + c.ExpiresAt.UTC().Format(time.RFC3339))
	case token == "":
		return refusal("no X-Bty-Cycle token (a live env older than this server sends none: rebuild the boot directory's files with bty-media netboot)")
	case subtle.ConstantTimeCompare([]byte(HashCycleToken(token)), []byte(c.TokenHash)) != 1:
		return refusal("wrong X-Bty-Cycle token")
	case ip != c.IP:
		return refusal("asked from " + ip + ", not from the cycle's address " + c.IP)
	case m.LastFlashedAt != nil && !m.LastFlashedAt.Before(c.StartedAt):
		return refusal("the cycle already reported done")
	case m.LastFailedAt != nil && !m.LastFailedAt.Before(c.StartedAt):
		return refusal("the cycle already reported a failure")
	}
	return nil
}

// ReleaseSeed is m with its seed's half what ("user-data" or
// "meta-data") marked as released in its cycle, or an error wrapping
// ErrCycleRefused when the call does not belong to the cycle
// (CheckCycle) or that half was already released.
func (m Machine) ReleaseSeed(what, token, ip string, now time.Time) (Machine, error) {
	if err := m.CheckCycle(token, ip, now); err != nil {
		return m, err
	}
	c := *m.Cycle
	served := &c.MetaDataServed
	if what == "user-data" {
		served = &c.UserDataServed
	}
	if *served {
		return m, refusal(what + " was already released in this flash cycle")
	}
	*served = true
	m.Cycle = &c
	return m, nil
}

// Conflicting reports whether a contact from v.IP at v.At conflicts
// with m's open cycle: one is open and bound to another address.
func (m Machine) Conflicting(v Visit) bool {
	return !v.DHCP && m.Cycle.Open(v.At) && v.IP != m.Cycle.IP
}

// conflict is m after a conflicting contact v, and what it is served:
// the local disk, with a console note; the cycle, NextBoot and last
// seen are untouched.
func (m Machine) conflict(v Visit) (Machine, Decision) {
	at := v.At.UTC()
	m.LastConflictAt, m.LastConflictIP = &at, v.IP
	return m, Decision{Serve: PolicyLocal, Conflict: true,
		Why:  "local disk (conflict: another address sent this MAC during its flash cycle)",
		Note: "bty: " + m.MAC.String() + " is in a flash cycle started from another address, booting the local disk"}
}

// open is m with a new flash cycle for v when d serves the live env and
// v carries a token (d then carries the token too); any earlier cycle
// ends.
func (m Machine) open(v Visit, d Decision) (Machine, Decision) {
	m.Cycle = nil
	if v.Token == "" || (d.Serve != PolicyFlash && d.Serve != PolicyTUI) {
		return m, d
	}
	ttl := v.TTL
	if ttl <= 0 {
		ttl = DefaultCycleTTL
	}
	at := v.At.UTC()
	m.Cycle = &Cycle{TokenHash: HashCycleToken(v.Token), IP: v.IP, StartedAt: at, ExpiresAt: at.Add(ttl)}
	d.Cycle = v.Token
	return m, d
}
