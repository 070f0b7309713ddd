//! How the programs sit on an interface: the XDP program for the fast path and, on TC ingress
//! (tcx) of the same interface, its skb-path twin for the frames XDP leaves to it (a checksum the
//! device was to finish, a GSO super-frame). A veth gets the skb path alone: native XDP on a veth
//! turns its peer's TSO off (the kernel's `veth_xdp_set`), and generic XDP copies every super-frame
//! into one linear buffer. Each is a bpf_link, pinned when the agent has a pin directory so that it
//! outlives the agent and a restarted agent swaps its programs in on it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachType};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{SchedClassifier, Xdp, XdpMode};
use aya::Ebpf;

use crate::dataplane::object::{PORT_PROGRAM, PORT_TC_PROGRAM, UPLINK_PROGRAM, UPLINK_TC_PROGRAM};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// The skb path alone (TC) on veths, native XDP elsewhere (falling back to generic when the
    /// driver refuses).
    Auto,
    /// Native XDP only, veths included.
    Driver,
    /// Generic (SKB) XDP only.
    Skb,
    /// The skb path alone (TC), no XDP, on every interface.
    Tc,
}

/// Where links are pinned under the pin directory, one file per interface: XDP links (the name
/// earlier agents used), TC links.
pub const XDP_LINKS: &str = "links";
pub const TC_LINKS: &str = "tc-links";

/// One hook's link.
enum Link {
    /// A bpf_link, pinned when the agent has a pin directory.
    Fd(FdLink),
    /// A link owned by the program (no pin directory: tests and benchmarks).
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
    /// A link a previous agent pinned, still running its program on its maps until `commit`.
    Inherited,
    /// Nothing there: a program without an skb path (the labs' helpers).
    None,
}

/// The programs of one interface.
pub struct Attachment {
    /// The XDP program (its TC twin follows from it).
    pub program: &'static str,
    xdp: Link,
    tc: Link,
}

impl Attachment {
    /// Whether a previous agent's program still runs on one of the links.
    pub fn inherited(&self) -> bool {
        matches!(self.xdp, Link::Inherited) || matches!(self.tc, Link::Inherited)
    }

    /// Whether XDP programs may redirect frames into the interface (it runs XDP itself); the
    /// others take frames for an interface on the skb path only.
    pub fn takes_xdp_frames(&self) -> bool {
        !matches!(self.xdp, Link::None)
    }
}

/// The skb-path program that goes with an XDP program.
fn tc_program(xdp: &str) -> Option<&'static str> {
    match xdp {
        PORT_PROGRAM => Some(PORT_TC_PROGRAM),
        UPLINK_PROGRAM => Some(UPLINK_TC_PROGRAM),
        _ => None,
    }
}

/// bpffs refuses dots in names; interface names may have them (VLANs: eth0.100).
pub fn pin_name(iface: &str) -> String {
    iface.replace('.', "_")
}

/// The links of one agent: its object's programs, where it pins, how it attaches.
pub struct Links<'a> {
    pub ebpf: &'a mut Ebpf,
    /// The pin directory, if any.
    pub pin_dir: Option<&'a Path>,
    pub mode: AttachMode,
    /// Whether links a previous agent pinned may be taken over now (see `Dataplane::commit`).
    pub committed: bool,
}

impl Links<'_> {
    fn pin(&self, dir: &str, iface: &str) -> Option<PathBuf> {
        self.pin_dir.map(|d| d.join(dir).join(pin_name(iface)))
    }

    /// Whether `iface` gets XDP besides the skb path.
    fn xdp_on(&self, iface: &str) -> bool {
        match self.mode {
            AttachMode::Tc => false,
            AttachMode::Auto => crate::net::interfaces::driver(iface).as_deref() != Some("veth"),
            AttachMode::Driver | AttachMode::Skb => true,
        }
    }

    /// Attaches `program` and its skb-path twin to `iface` (the twin alone where XDP is not
    /// wanted; a program without a twin always goes on XDP).
    pub fn attach(&mut self, iface: &str, program: &'static str) -> Result<Attachment> {
        let xdp = match tc_program(program) {
            Some(_) if !self.xdp_on(iface) => self.no_xdp(iface)?,
            _ => self.attach_xdp(iface, program)?,
        };
        let tc = match tc_program(program) {
            Some(tc) => match self.attach_tc(iface, tc) {
                Ok(link) => link,
                Err(e) => {
                    // Half attached is worse than not at all: offloaded frames would be lost.
                    self.forget(
                        iface,
                        Attachment {
                            program,
                            xdp,
                            tc: Link::None,
                        },
                    );
                    return Err(e);
                }
            },
            None => Link::None,
        };
        Ok(Attachment { program, xdp, tc })
    }

    fn attach_xdp(&mut self, iface: &str, program: &'static str) -> Result<Link> {
        let pin = self.pin(XDP_LINKS, iface);
        if let Some(link) = self.take_over(pin.as_deref(), |ebpf, fd| {
            let prog: &mut Xdp = named(ebpf, program)?;
            let id = prog.attach_to_link(XdpLink::try_from(fd)?)?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })? {
            return Ok(link);
        }
        let mode = self.mode;
        let prog: &mut Xdp = named(self.ebpf, program)?;
        let id = match mode {
            AttachMode::Driver => prog.attach(iface, XdpMode::Driver),
            AttachMode::Skb => prog.attach(iface, XdpMode::Skb),
            // A program without an skb path (the labs' helpers) goes on XDP all the same.
            AttachMode::Auto | AttachMode::Tc => prog.attach(iface, XdpMode::Driver).or_else(|e| {
                tracing::info!(iface, "native XDP refused ({e}); using generic XDP");
                prog.attach(iface, XdpMode::Skb)
            }),
        }
        .with_context(|| format!("attach {program} to {iface}"))?;
        match pin {
            None => Ok(Link::Xdp(id)),
            Some(pin) => {
                let fd = FdLink::try_from(prog.take_link(id)?).context("the kernel attached XDP without a bpf_link")?;
                pin_fd(fd, &pin)
            }
        }
    }

    /// No XDP on `iface`. An XDP link a previous agent pinned there (another mode) keeps running
    /// its program until `commit`, and is then unpinned, which detaches it.
    fn no_xdp(&mut self, iface: &str) -> Result<Link> {
        let Some(pin) = self.pin(XDP_LINKS, iface).filter(|p| p.exists()) else {
            // Someone else's XDP program would see the port's frames before the skb path does.
            let index = crate::net::interfaces::ifindex(iface).with_context(|| format!("no interface {iface}"))?;
            if let Some((_, id)) = crate::net::links::xdp_of(index)? {
                bail!("{iface} runs another XDP program (id {id}), which would take its frames first");
            }
            return Ok(Link::None);
        };
        if !self.committed {
            return Ok(Link::Inherited);
        }
        std::fs::remove_file(&pin).with_context(|| format!("unpin {}", pin.display()))?;
        Ok(Link::None)
    }

    fn attach_tc(&mut self, iface: &str, program: &'static str) -> Result<Link> {
        let pin = self.pin(TC_LINKS, iface);
        if let Some(link) = self.take_over(pin.as_deref(), |ebpf, fd| {
            let prog: &mut SchedClassifier = named(ebpf, program)?;
            let id = prog.attach_to_link(SchedClassifierLink::try_from(fd)?)?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })? {
            return Ok(link);
        }
        let prog: &mut SchedClassifier = named(self.ebpf, program)?;
        // tcx (a bpf_link on TC ingress, no qdisc needed): kernel 6.6 and later.
        let id = prog
            .attach(iface, TcAttachType::Ingress)
            .with_context(|| format!("attach {program} to TC ingress of {iface}"))?;
        match pin {
            None => Ok(Link::Tc(id)),
            Some(pin) => {
                let fd = FdLink::try_from(prog.take_link(id)?).context("TC attached without a bpf_link (tcx)")?;
                pin_fd(fd, &pin)
            }
        }
    }

    /// A link a previous agent pinned at `pin`: left running its program until `commit` (swapped
    /// now, it would run this agent's program on maps still being filled), or then swapped over
    /// atomically with `swap`. `None`: nothing pinned, or not reusable (then unpinned).
    fn take_over(
        &mut self,
        pin: Option<&Path>,
        swap: impl FnOnce(&mut Ebpf, FdLink) -> Result<FdLink>,
    ) -> Result<Option<Link>> {
        let Some(pin) = pin.filter(|p| p.exists()) else {
            return Ok(None);
        };
        if !self.committed {
            return Ok(Some(Link::Inherited));
        }
        let swapped = PinnedLink::from_pin(pin)
            .map_err(anyhow::Error::from)
            .and_then(|p| swap(self.ebpf, p.into()));
        match swapped {
            Ok(fd) => Ok(Some(Link::Fd(fd))),
            Err(e) => {
                tracing::info!(pin = %pin.display(), "previous link not reusable ({e:#}); attaching afresh");
                std::fs::remove_file(pin)?;
                Ok(None)
            }
        }
    }

    /// Detaches what `attachment` holds on `iface` (a link already gone with its interface is no
    /// error) and unpins it.
    pub fn forget(&mut self, iface: &str, attachment: Attachment) {
        for (dir, link) in [(XDP_LINKS, attachment.xdp), (TC_LINKS, attachment.tc)] {
            if let Some(pin) = self.pin(dir, iface) {
                let _ = std::fs::remove_file(pin);
            }
            match link {
                Link::Xdp(id) => {
                    if let Ok(prog) = named::<Xdp>(self.ebpf, attachment.program) {
                        let _ = prog.detach(id);
                    }
                }
                Link::Tc(id) => {
                    if let Some(tc) = tc_program(attachment.program) {
                        if let Ok(prog) = named::<SchedClassifier>(self.ebpf, tc) {
                            let _ = prog.detach(id);
                        }
                    }
                }
                // Unpinned and closed, the link detaches.
                Link::Fd(fd) => drop(fd),
                Link::Inherited | Link::None => {}
            }
        }
    }
}

/// The id of an alioth program on TC ingress (tcx) of `iface`, if one runs there.
pub fn tc_program_on(iface: &str) -> Option<u32> {
    let (_, programs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress).ok()?;
    programs
        .iter()
        .find(|p| p.name_as_str().is_some_and(|n| n.starts_with("alioth_")))
        .map(|p| p.id())
}

/// Pins `fd` at `pin`, so it outlives this process.
fn pin_fd(fd: FdLink, pin: &Path) -> Result<Link> {
    let pinned = fd
        .pin(pin)
        .with_context(|| format!("pin the link at {}", pin.display()))?;
    Ok(Link::Fd(pinned.into()))
}

/// Program `name` of the object, as its kind.
pub fn named<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let Some(p) = ebpf.program_mut(name) else {
        bail!("the object has no program {name}");
    };
    Ok(p.try_into()?)
}

/// The pin directories of links, for `commit` and `--reset`.
pub fn pin_dirs(dir: &Path) -> [PathBuf; 2] {
    [dir.join(XDP_LINKS), dir.join(TC_LINKS)]
}
