package server

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/btyproject/bty/internal/fleet"
)

// Config is bty-web's configuration, read from the environment (docs/reference.md,
// "bty-web") with flags overriding it.
type Config struct {
	// StateDir holds state.db (BTY_STATE_DIR, default /var/lib/bty).
	StateDir string
	// ImageRoot holds the images served and uploaded (BTY_IMAGE_ROOT,
	// default /var/lib/bty/images).
	ImageRoot string
	// BootDir holds the live env's artifacts (BTY_BOOT_DIR, default
	// $BTY_STATE_DIR/boot).
	BootDir string
	// Host and Port to listen on (BTY_WEB_HOST 0.0.0.0, BTY_WEB_PORT 8080).
	Host string
	Port int
	// TFTPPort serves the iPXE binaries (BTY_TFTP_PORT, default 69; 0
	// turns TFTP off) from IPXEDir (BTY_IPXE_DIR, /usr/lib/ipxe).
	TFTPPort int
	IPXEDir  string
	// ProxyDHCPIface enables proxy-DHCP on an interface
	// (BTY_PROXYDHCP_IFACE; the settings API can change it).
	ProxyDHCPIface string
	// MaxUpload caps PUT /images and /boot bodies (BTY_MAX_UPLOAD, e.g.
	// "64GiB"; default 64 GiB).
	MaxUpload int64
	// SessionTTL is how long a login token lives (BTY_SESSION_TTL,
	// default 12h).
	SessionTTL time.Duration
	// TLSCert and TLSKey serve HTTPS (BTY_TLS_CERT, BTY_TLS_KEY); cookies
	// are then Secure.
	TLSCert, TLSKey string
	// AdminPassword, when set (BTY_ADMIN_PASSWORD), becomes the admin
	// password at start.
	AdminPassword string
	// MaxLoginChecks caps the password checks running at once
	// (BTY_MAX_LOGIN_CHECKS, default half the number of CPUs); each holds
	// 64 MiB, and logins beyond the cap get 429 before any hashing. Below
	// 1, New uses the default.
	MaxLoginChecks int
	// BackupInterval is how often the server writes a backup of
	// state.db into $BTY_STATE_DIR/backups (BTY_BACKUP_INTERVAL, default
	// 6h; 0 turns it off), keeping the BackupKeep newest (BTY_BACKUP_KEEP,
	// default 8).
	BackupInterval time.Duration
	BackupKeep     int
	// BodyTimeout is how long a request body may take in all
	// (BTY_BODY_TIMEOUT, default 30s); UploadIdleTimeout is how long an
	// upload (PUT /images, PUT /boot, POST /state/import) may go without
	// a byte arriving (BTY_UPLOAD_IDLE_TIMEOUT, default 60s): uploads
	// have no overall limit. Zero: New uses the default.
	BodyTimeout       time.Duration
	UploadIdleTimeout time.Duration
	// MaxConns caps the HTTP connections open at once (BTY_MAX_CONNS,
	// default 4096) and MaxConnsPerAddr those from one client address
	// (BTY_MAX_CONNS_PER_ADDR, default 256); connections beyond are
	// closed at once. Below 1: New uses the default.
	MaxConns        int
	MaxConnsPerAddr int
	// PXE contacts of unknown machines create records (discovery) at
	// most DiscoveryBurst at once per client address, one more per
	// DiscoveryEvery (BTY_DISCOVERY_BURST, default 10;
	// BTY_DISCOVERY_EVERY, default 10s), and while fewer than
	// MaxUnclaimed discovered machines have no image
	// (BTY_MAX_UNCLAIMED, default 1000). Beyond: the discovery boot is
	// served, nothing recorded. Below 1 (0), New uses the defaults.
	DiscoveryBurst int
	DiscoveryEvery time.Duration
	MaxUnclaimed   int
	// CycleTTL is how long a flash cycle stays open (BTY_CYCLE_TTL,
	// default 4h): its live env's calls are accepted, and other
	// addresses sending its MAC are conflicts, until done and the disk
	// boot after it, a failure and the retry, or this long after the
	// contact that opened it. Zero: New uses the default.
	CycleTTL time.Duration
	// FlashDeadline is how long a flash may take from its request (or
	// the PXE contact that started it) to ready before it is marked
	// timeout, for machines without their own flash_deadline
	// (BTY_FLASH_DEADLINE, default 1h). Zero: New uses the default.
	FlashDeadline time.Duration
	// MaxRuns bounds the cijoe-online runs at once when the max_runs
	// setting is unset (BTY_MAX_RUNS, default 4); Cijoe is the cijoe
	// program, a name looked up on PATH or a path (BTY_CIJOE, default
	// cijoe).
	MaxRuns int
	Cijoe   string
	// Recovery bounds failure recovery (docs/reference.md, "Failure
	// recovery"): BTY_RECOVERY_CYCLE_WAIT, BTY_RECOVERY_BACKOFF,
	// BTY_RECOVERY_REFLASHES, BTY_RECOVERY_PER_DAY and
	// BTY_MAX_RECOVERIES; zero fields: fleet.DefaultRecoveryPolicy's.
	Recovery fleet.RecoveryPolicy
	// NoChunkStores turns off the images' chunk stores
	// (BTY_CHUNK_STORES=off; default on): built in the background into
	// $BTY_STATE_DIR/chunks, served at GET /images/{name}/chunks.
	NoChunkStores bool
	// manualTicks keeps Serve from starting the automation's loops:
	// tests call their ticks with a fake now.
	manualTicks bool
}

// ConfigFromEnv reads Config from the environment with docs/reference.md's
// defaults. Malformed values are errors naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Config{
		StateDir:       envOr(getenv, "BTY_STATE_DIR", "/var/lib/bty"),
		ImageRoot:      envOr(getenv, "BTY_IMAGE_ROOT", "/var/lib/bty/images"),
		Host:           envOr(getenv, "BTY_WEB_HOST", "0.0.0.0"),
		IPXEDir:        envOr(getenv, "BTY_IPXE_DIR", "/usr/lib/ipxe"),
		ProxyDHCPIface: getenv("BTY_PROXYDHCP_IFACE"),
		TLSCert:        getenv("BTY_TLS_CERT"),
		TLSKey:         getenv("BTY_TLS_KEY"),
		AdminPassword:  getenv("BTY_ADMIN_PASSWORD"),
		MaxUpload:      64 << 30,
		SessionTTL:     12 * time.Hour,
		MaxLoginChecks: defaultLoginChecks(),
		BackupInterval: 6 * time.Hour,
		BackupKeep:     8,
		DiscoveryBurst: defaultDiscoveryBurst,
		DiscoveryEvery: defaultDiscoveryEvery,
		MaxUnclaimed:   defaultMaxUnclaimed,
	}
	c.BootDir = envOr(getenv, "BTY_BOOT_DIR", filepath.Join(c.StateDir, "boot"))
	var err error
	// Port 0 picks a free port (the log says which).
	if c.Port, err = envPort(getenv, "BTY_WEB_PORT", 8080, true); err != nil {
		return c, err
	}
	if c.TFTPPort, err = envPort(getenv, "BTY_TFTP_PORT", 69, true); err != nil {
		return c, err
	}
	if v := getenv("BTY_MAX_UPLOAD"); v != "" {
		n, err := humanize.ParseBytes(v)
		if err != nil || n == 0 {
			return c, fmt.Errorf("BTY_MAX_UPLOAD=%q: want a size like 64GiB or 500MB", v)
		}
		c.MaxUpload = int64(n)
	}
	if v := getenv("BTY_SESSION_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			return c, fmt.Errorf("BTY_SESSION_TTL=%q: want a duration of at least 1m, like 12h", v)
		}
		c.SessionTTL = d
	}
	if v := getenv("BTY_MAX_LOGIN_CHECKS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BTY_MAX_LOGIN_CHECKS=%q: want a whole number of at least 1 (each running password check holds 64 MiB)", v)
		}
		c.MaxLoginChecks = n
	}
	if v := getenv("BTY_BACKUP_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if v == "0" {
			d, err = 0, nil
		}
		if err != nil || (d != 0 && d < time.Minute) {
			return c, fmt.Errorf("BTY_BACKUP_INTERVAL=%q: want a duration of at least 1m, like 6h, or 0 to turn automatic backups off", v)
		}
		c.BackupInterval = d
	}
	if v := getenv("BTY_BACKUP_KEEP"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BTY_BACKUP_KEEP=%q: want a whole number of at least 1", v)
		}
		c.BackupKeep = n
	}
	if c.BodyTimeout, err = envDuration(getenv, "BTY_BODY_TIMEOUT", defaultBodyTimeout); err != nil {
		return c, err
	}
	if c.UploadIdleTimeout, err = envDuration(getenv, "BTY_UPLOAD_IDLE_TIMEOUT", defaultUploadIdleTimeout); err != nil {
		return c, err
	}
	if c.CycleTTL, err = envDuration(getenv, "BTY_CYCLE_TTL", fleet.DefaultCycleTTL); err != nil {
		return c, err
	}
	if c.FlashDeadline, err = envDuration(getenv, "BTY_FLASH_DEADLINE", fleet.DefaultFlashDeadline); err != nil {
		return c, err
	}
	if c.MaxRuns, err = envCount(getenv, "BTY_MAX_RUNS", defaultMaxRuns); err != nil {
		return c, err
	}
	if c.MaxRuns > maxMaxRuns {
		return c, fmt.Errorf("BTY_MAX_RUNS=%d: at most %d cijoe runs at once", c.MaxRuns, maxMaxRuns)
	}
	c.Cijoe = envOr(getenv, "BTY_CIJOE", "cijoe")
	def := fleet.DefaultRecoveryPolicy
	if c.Recovery.CycleWait, err = envDuration(getenv, "BTY_RECOVERY_CYCLE_WAIT", def.CycleWait); err != nil {
		return c, err
	}
	if c.Recovery.Backoff, err = envDuration(getenv, "BTY_RECOVERY_BACKOFF", def.Backoff); err != nil {
		return c, err
	}
	if c.Recovery.MaxReflashes, err = envCount(getenv, "BTY_RECOVERY_REFLASHES", def.MaxReflashes); err != nil {
		return c, err
	}
	if c.Recovery.PerDay, err = envCount(getenv, "BTY_RECOVERY_PER_DAY", def.PerDay); err != nil {
		return c, err
	}
	if c.Recovery.MaxActive, err = envCount(getenv, "BTY_MAX_RECOVERIES", def.MaxActive); err != nil {
		return c, err
	}
	if c.MaxConns, err = envCount(getenv, "BTY_MAX_CONNS", defaultMaxConns); err != nil {
		return c, err
	}
	if c.MaxConnsPerAddr, err = envCount(getenv, "BTY_MAX_CONNS_PER_ADDR", defaultMaxConnsPerAddr); err != nil {
		return c, err
	}
	if v := getenv("BTY_DISCOVERY_BURST"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BTY_DISCOVERY_BURST=%q: want a whole number of at least 1 (discoveries a client address may make at once)", v)
		}
		c.DiscoveryBurst = n
	}
	if v := getenv("BTY_DISCOVERY_EVERY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("BTY_DISCOVERY_EVERY=%q: want a positive duration like 10s (one more discovery per client address per this)", v)
		}
		c.DiscoveryEvery = d
	}
	if v := getenv("BTY_MAX_UNCLAIMED"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BTY_MAX_UNCLAIMED=%q: want a whole number of at least 1 (discovered machines without an image)", v)
		}
		c.MaxUnclaimed = n
	}
	switch v := getenv("BTY_CHUNK_STORES"); v {
	case "", "on":
	case "off":
		c.NoChunkStores = true
	default:
		return c, fmt.Errorf("BTY_CHUNK_STORES=%q: want on (build the images' chunk stores for delta flashes, the default) or off", v)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, fmt.Errorf("set both BTY_TLS_CERT and BTY_TLS_KEY, or neither")
	}
	return c, nil
}

// defaultLoginChecks is MaxLoginChecks' default: one password check per
// two CPUs, at least 1, so logins can never take every core from PXE
// clients.
func defaultLoginChecks() int { return max(1, runtime.NumCPU()/2) }

func envOr(getenv func(string) string, key, def string) string {
	if v := strings.TrimSpace(getenv(key)); v != "" {
		return v
	}
	return def
}

// envDuration reads a duration of at least 1s.
func envDuration(getenv func(string) string, key string, def time.Duration) (time.Duration, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%s=%q: want a duration of at least 1s, like %v", key, v, def)
	}
	return d, nil
}

// envCount reads a whole number of at least 1.
func envCount(getenv func(string) string, key string, def int) (int, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a whole number of at least 1", key, v)
	}
	return n, nil
}

func envPort(getenv func(string) string, key string, def int, zeroOK bool) (int, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !zeroOK) {
		return 0, fmt.Errorf("%s=%q: want a port number 0-65535", key, v)
	}
	return n, nil
}

// DBPath is the SQLite database file.
func (c Config) DBPath() string { return filepath.Join(c.StateDir, "state.db") }

// BackupDir holds the automatic backups.
func (c Config) BackupDir() string { return filepath.Join(c.StateDir, "backups") }
