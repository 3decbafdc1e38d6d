package power

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// The IPMI driver opens one RMCP+ ("lanplus") session per call with
// github.com/bougou/go-ipmi, sends the chassis commands and closes it:
// no session outlives a call, so none goes stale between reflashes.

type ipmiDriver struct {
	c    Config
	o    options
	host string
	port int
}

var _ Driver = (*ipmiDriver)(nil)

func newIPMI(c Config, o options) (*ipmiDriver, error) {
	host, port, err := ipmiHostPort(c.Address)
	if err != nil { // Validate checked it; keep the error path anyway
		return nil, fmt.Errorf("ipmi address: %w", err)
	}
	return &ipmiDriver{c: c, o: o, host: host, port: port}, nil
}

func (d *ipmiDriver) addr() string { return net.JoinHostPort(d.host, fmt.Sprint(d.port)) }

func (d *ipmiDriver) Power(ctx context.Context, a Action) (State, error) {
	if err := checkAction(a); err != nil {
		return StateUnknown, err
	}
	var st State
	err := d.session(ctx, "power "+string(a), func(ctx context.Context, cl *client.Client) error {
		now, err := chassisState(ctx, cl)
		if err != nil {
			return err
		}
		var ctl chassis.ChassisControl
		switch {
		case a == Status, a == On && now == StateOn, a == Off && now == StateOff:
			st = now
			return nil
		case a == On, a == Cycle && now == StateOff:
			ctl = chassis.ChassisControlPowerUp // a cycle of an off machine is refused
		case a == Off:
			ctl = chassis.ChassisControlPowerDown
		case a == Cycle:
			ctl = chassis.ChassisControlPowerCycle
		}
		if _, err := cl.ChassisControl(ctx, ctl); err != nil {
			return fmt.Errorf("chassis control %d: %w", ctl, err)
		}
		d.o.log.Info("BMC chassis control sent", "control", int(ctl))
		st, err = chassisState(ctx, cl)
		return err
	})
	if err != nil {
		return StateUnknown, err
	}
	return st, nil
}

func chassisState(ctx context.Context, cl *client.Client) (State, error) {
	s, err := cl.GetChassisStatus(ctx)
	if err != nil {
		return StateUnknown, fmt.Errorf("chassis status: %w", err)
	}
	if s.PowerIsOn {
		return StateOn, nil
	}
	return StateOff, nil
}

// PXEOnce sets the boot flags as `ipmitool chassis bootdev pxe
// options=efiboot` does: force PXE, next boot only, EFI boot type (the
// firmware bty's netboot serves; a BIOS-only machine ignores the flag
// or the BMC refuses it, then ok is false).
func (d *ipmiDriver) PXEOnce(ctx context.Context) (bool, error) {
	ok := false
	err := d.session(ctx, "boot device", func(ctx context.Context, cl *client.Client) error {
		err := cl.SetBootDevice(ctx, types.BootDeviceSelectorForcePXE, types.BIOSBootTypeEFI, false)
		if re, isRe := types.IsResponseError(err); isRe {
			switch re.CompletionCode() {
			case types.CodeParameterNotSupported, types.CodeInvalidCommand, types.CodeRequestDataFieldInvalid:
				d.o.log.Info("BMC refuses a boot device override", "completion_code", fmt.Sprintf("%#02x", uint8(re.CompletionCode())))
				return nil
			}
		}
		if err != nil {
			return fmt.Errorf("setting a one-time PXE boot: %w", err)
		}
		ok = true
		d.o.log.Info("BMC set to PXE boot once")
		return nil
	})
	return ok, err
}

// session runs fn in a fresh RMCP+ session, bounded by the timeout and
// retried on errors below IPMI (a refused port), then maps the error.
func (d *ipmiDriver) session(ctx context.Context, what string, fn func(context.Context, *client.Client) error) error {
	_, err := withRetry(ctx, d.o, what, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, d.once(ctx, what, fn)
	})
	return scrubErr(err, d.c.Password)
}

func (d *ipmiDriver) once(ctx context.Context, what string, fn func(context.Context, *client.Client) error) (err error) {
	// go-ipmi parses what the BMC sends; a malformed datagram must not
	// take bty-web down with it.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: ipmi %s on %s: the BMC's answer crashed the IPMI library (%v): update the BMC's firmware or try the redfish driver", ErrBMC, what, d.addr(), p)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, d.o.timeout)
	defer cancel()
	cl, err := client.NewClient(d.host, d.port, d.c.Username, d.c.Password)
	if err != nil {
		return fmt.Errorf("ipmi %s: %w", d.addr(), err)
	}
	// go-ipmi retries each datagram itself; give each try a slice of
	// the call's timeout so a lost datagram is resent in time.
	cl.WithTimeout(min(max(d.o.timeout/10, 100*time.Millisecond), time.Second)).WithRetry(2)
	cl.WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	if d.c.CipherSuite != 0 {
		cl.WithCipherSuiteID(types.CipherSuiteID(d.c.CipherSuite))
	}
	start := time.Now()
	if err := cl.Connect(ctx); err != nil {
		// Close only frees the socket: with an ended context it does not
		// wait for a BMC that never let a session open.
		done, stop := context.WithCancel(ctx)
		stop()
		_ = cl.Close(done)
		return d.mapError(ctx, "opening a session", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if cerr := cl.Close(cctx); cerr != nil {
			d.o.log.Debug("closing the IPMI session", "err", cerr)
		}
	}()
	if err := fn(ctx, cl); err != nil {
		return d.mapError(ctx, what, err)
	}
	d.o.log.Debug("BMC request", "request", what, "took", time.Since(start))
	return nil
}

// mapError says what a go-ipmi error means for the operator.
func (d *ipmiDriver) mapError(ctx context.Context, what string, err error) error {
	var rs *types.RmcpStatusError
	var ne net.Error
	re, isRe := types.IsResponseError(err)
	switch {
	case errors.Is(err, client.ErrRAKPAuthentication),
		// go-ipmi's Connect20 joins the per-cipher-suite errors with %v,
		// not %w: the sentinel survives only as text.
		strings.Contains(err.Error(), client.ErrRAKPAuthentication.Error()),
		errors.As(err, &rs) && (rs.StatusCode() == types.RmcpStatusCodeUnauthorizedName ||
			rs.StatusCode() == types.RmcpStatusCodeInvalidIntegrityCheckValue ||
			rs.StatusCode() == types.RmcpStatusCodeInvalidRole):
		// go-ipmi's own text adds nothing here ("connect20 failed after
		// try all cipher suite ids ..."): it goes to the debug log.
		d.o.log.Debug("BMC refused the session", "what", what, "address", d.addr(), "err", scrubErr(err, d.c.Password))
		return fmt.Errorf("%w: ipmi %s on %s for user %q: check the username and password in the machine's power settings",
			ErrCredentials, what, d.addr(), d.c.Username)
	case isRe && re.CompletionCode() == types.CodeInsufficientPrivilege:
		return fmt.Errorf("%w: ipmi %s on %s: user %q may not do this: give the BMC account the operator or administrator privilege",
			ErrCredentials, what, d.addr(), d.c.Username)
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout(),
		// go-ipmi's own resends can run out before the context does;
		// it says so only in text ("... before UDP read deadline").
		strings.Contains(err.Error(), "read deadline"):
		return fmt.Errorf("%w: ipmi %s: no answer from %s within %s: check the address, that IPMI over LAN is enabled on the BMC and UDP port %d is reachable from here",
			ErrUnreachable, what, d.addr(), d.o.timeout, d.port)
	case ctx.Err() != nil:
		return fmt.Errorf("ipmi %s on %s: %w", what, d.addr(), ctx.Err())
	case errors.As(err, &ne):
		return &retryable{fmt.Errorf("%w: ipmi %s on %s: %v: check the address and that the BMC is reachable from here", ErrUnreachable, what, d.addr(), err)}
	}
	return fmt.Errorf("%w: ipmi %s on %s: %v", ErrBMC, what, d.addr(), err)
}
