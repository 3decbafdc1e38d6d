// Package power switches a machine on, off or through a power cycle and
// asks its BMC for a one-time PXE boot, so a machine can be reflashed
// with nobody at its console.
//
// One small interface, Driver, has two implementations: IPMI over LAN
// (RMCP+, "lanplus", with github.com/bougou/go-ipmi) and Redfish (plain
// net/http: the service root, the Systems collection, one
// ComputerSystem, its Reset action and its Boot override). New picks
// one from a Config; Config.Validate says what an operator must fix.
// Every call is bounded by a timeout, retried a few times when the BMC
// cannot be reached or answers with a server error, and fails with an
// error that says what to do. The BMC password never appears in an
// error, a log line or Config's printed forms.
//
// The package has no storage, HTTP-server or CLI code; like Ironic's
// power interface or bmclib's providers, callers hold the Config.
package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Action is what Driver.Power does.
type Action string

// The power actions.
const (
	On     Action = "on"     // power on; nothing when already on
	Off    Action = "off"    // power off now (a hard off where the BMC offers one)
	Cycle  Action = "cycle"  // off then on; power on when off
	Status Action = "status" // only report the state
)

// Actions lists the accepted Actions.
var Actions = []Action{On, Off, Cycle, Status}

// State is a machine's power state as its BMC reports it.
type State string

// The power states. Unknown is also what a failed call returns.
const (
	StateOn      State = "on"
	StateOff     State = "off"
	StateUnknown State = "unknown"
)

// Driver controls one machine's power through its BMC. A Driver holds no
// connection between calls and is safe for concurrent use.
type Driver interface {
	// Power performs a and returns the state the BMC reports right
	// after it (which may lag a request the BMC carries out slowly).
	Power(ctx context.Context, a Action) (State, error)
	// PXEOnce asks the BMC to boot the machine from the network on its
	// next boot only. ok is false, with a nil error, when the BMC does
	// not offer that; then the machine boots as its firmware is set up.
	PXEOnce(ctx context.Context) (ok bool, err error)
}

// Errors callers can test for with errors.Is; the messages wrapping them
// name the BMC and say what to do.
var (
	// ErrNoDriver: the machine has no power driver (Driver "none").
	ErrNoDriver = errors.New("the machine has no power driver")
	// ErrCredentials: the BMC refused the username or password.
	ErrCredentials = errors.New("the BMC refused the credentials")
	// ErrUnreachable: the BMC did not answer in time or refused the
	// connection, after the retries.
	ErrUnreachable = errors.New("the BMC did not answer")
	// ErrBMC: the BMC answered in a way bty cannot use (an error status,
	// a document without the expected fields, an unknown system).
	ErrBMC = errors.New("unexpected BMC answer")
)

// Defaults for the options.
const (
	DefaultTimeout = 10 * time.Second
	DefaultRetries = 2
)

// Option tunes New.
type Option func(*options)

type options struct {
	log     *slog.Logger
	timeout time.Duration
	retries int
	backoff time.Duration
}

// WithLogger makes the driver log each BMC request at debug level and
// each retry at warn level. The default discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithTimeout bounds each request to the BMC (one HTTP request, or one
// IPMI session with its commands); DefaultTimeout when d <= 0.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithRetries sets how many times a request is tried again after a
// connection error or a server error (HTTP 5xx), waiting backoff, then
// twice that, and so on between tries. n < 0 keeps DefaultRetries;
// backoff <= 0 keeps 500 ms.
func WithRetries(n int, backoff time.Duration) Option {
	return func(o *options) {
		if n >= 0 {
			o.retries = n
		}
		if backoff > 0 {
			o.backoff = backoff
		}
	}
}

// New returns the Driver c names. It fails when c is invalid (the error
// lists each field to fix) and, for Driver "none", with ErrNoDriver.
func New(c Config, opts ...Option) (Driver, error) {
	o := options{
		log:     slog.New(slog.DiscardHandler),
		timeout: DefaultTimeout,
		retries: DefaultRetries,
		backoff: 500 * time.Millisecond,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := c.Err(); err != nil {
		return nil, scrubErr(err, c.Password)
	}
	o.log = o.log.With("power", c)
	switch c.Driver {
	case DriverIPMI:
		return newIPMI(c, o)
	case DriverRedfish:
		return newRedfish(c, o)
	default: // DriverNone; Validate refused the rest
		return nil, fmt.Errorf("%w: power it on, off or reboot it by other means (its button, a PDU), or set its power driver to ipmi or redfish with the BMC's address and credentials", ErrNoDriver)
	}
}

// checkAction refuses an Action that is not one of Actions.
func checkAction(a Action) error {
	for _, ok := range Actions {
		if a == ok {
			return nil
		}
	}
	q := make([]string, len(Actions))
	for i, a := range Actions {
		q[i] = string(a)
	}
	return fmt.Errorf("power action %q is not one of %s", a, strings.Join(q, ", "))
}

// retryable marks an error worth another try: a refused or reset
// connection, a 5xx answer.
type retryable struct{ err error }

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// withRetry runs try until it succeeds, returns an error not marked
// retryable, the retries are used up, or ctx ends.
func withRetry[T any](ctx context.Context, o options, what string, try func(context.Context) (T, error)) (T, error) {
	wait := o.backoff
	for attempt := 0; ; attempt++ {
		v, err := try(ctx)
		var r *retryable
		if err == nil || !errors.As(err, &r) || attempt >= o.retries {
			if r != nil && err == r {
				err = r.err
			}
			return v, err
		}
		o.log.Warn("BMC request failed, retrying", "request", what, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%s: %w (then stopped: %w)", what, err, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

// scrubbed is an error whose message had the password taken out. It
// unwraps only to this package's sentinel errors it wrapped, so no
// caller can reach (and print) the original message.
type scrubbed struct {
	msg string
	is  []error
}

func (e *scrubbed) Error() string   { return e.msg }
func (e *scrubbed) Unwrap() []error { return e.is }

// scrubErr returns err with every occurrence of password in its message
// replaced, in case a library or a BMC echoed it.
func scrubErr(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	s := &scrubbed{msg: scrub(err.Error(), password)}
	for _, sentinel := range []error{ErrNoDriver, ErrCredentials, ErrUnreachable, ErrBMC} {
		if errors.Is(err, sentinel) {
			s.is = append(s.is, sentinel)
		}
	}
	return s
}
