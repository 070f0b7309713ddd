//! The controller following interfaces as the kernel reports them (`crate::net::netlink`): a child of
//! `controller` so that it works on the controller's own fields.

use super::Controller;
use crate::goalstate::model::Id;
use crate::net::netlink::Change;

impl Controller {
    /// Follows an interface change: a port's interface that appears (again, perhaps under
    /// another index) is programmed and attached at once; one that is deleted leaves the port
    /// waiting for it, its old index cleared from the maps. Returns whether the underlay may have
    /// changed (then `refresh_overlay`).
    pub fn link_changed(&mut self, change: &Change) -> bool {
        self.mark_changing();
        let underlay = self.follow(change);
        self.mark_recorded();
        underlay
    }

    fn follow(&mut self, change: &Change) -> bool {
        match change {
            // The uplink (created again?): the overlay looks at it now.
            Change::Link { name, .. } if self.overlay().is_some_and(|o| o.info().name == *name) => true,
            Change::Link { name, index } => {
                // A port waiting for it, or one attached to an interface of that name that was
                // recreated between two notifications we saw (same name, another index).
                let id = self
                    .port_of(name)
                    .filter(|_| self.dp.attached_index(name).is_none_or(|i| i != *index));
                if let Some(id) = id {
                    match self.program_port(&id) {
                        Ok(true) => tracing::info!(
                            resource_id = &*id,
                            iface = name,
                            index,
                            "interface appeared; port attached"
                        ),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(resource_id = &*id, iface = name, "attach failed: {e:#}"),
                    }
                    self.dp.sweep_flows();
                }
                false
            }
            Change::LinkGone { name, index } => {
                if self.dp.attached_index(name) == Some(*index) {
                    if let Some(id) = self.port_of(name) {
                        if let Err(e) = self.dp.detach(name) {
                            tracing::warn!(resource_id = &*id, iface = name, "clearing the old interface: {e:#}");
                        }
                        tracing::info!(
                            resource_id = &*id,
                            iface = name,
                            "interface deleted; the port waits for it"
                        );
                    }
                }
                false
            }
            Change::Underlay => true,
            // Followed once per batch (`refresh_iface_flags`).
            Change::Peers => false,
            Change::Resync => {
                let stale: Vec<String> = self.dp.stale_attachments();
                for name in stale {
                    if self.port_of(&name).is_some() {
                        let _ = self.dp.detach(&name);
                    }
                }
                self.retry_pending();
                true
            }
        }
    }

    /// The port whose interface is `iface`.
    fn port_of(&self, iface: &str) -> Option<Id> {
        self.state.iface_owner(iface).cloned()
    }
}
