//! The four runtime switches of ASE (`ase-cli enable_*` / `disable_*`):
//! [`Switch`] names one, [`Switches`] is the set a decision reads.

use super::config::Config;
use super::lists::Source;

/// The runtime switches, as `ase-cli enable_*` / `disable_*` set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Switch {
    /// `enable_firewall`.
    Firewall = 0,
    /// `enable_abs`: traffic records go to ABS.
    Abs = 1,
    /// `enable_abs_attack`: the ABS attack list is fetched and blocks.
    AbsAttack = 2,
    /// `enable_ase_detected_attack`: real-time detection records and blocks.
    AseDetectedAttack = 3,
}

impl Switch {
    /// All switches.
    pub const ALL: [Switch; 4] = [
        Switch::Firewall,
        Switch::Abs,
        Switch::AbsAttack,
        Switch::AseDetectedAttack,
    ];

    /// Converts the C ABI number.
    pub fn from_u32(v: u32) -> Option<Switch> {
        Switch::ALL.get(v as usize).copied()
    }

    /// The CLI word (`firewall`, `abs`, `abs_attack`, `ase_detected_attack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Switch::Firewall => "firewall",
            Switch::Abs => "abs",
            Switch::AbsAttack => "abs_attack",
            Switch::AseDetectedAttack => "ase_detected_attack",
        }
    }

    /// The value `ase.conf` gives this switch (its `enable_*` key, or that
    /// key's default), which holds until `ase-cli` stores another.
    pub fn configured(self, config: &Config) -> bool {
        match self {
            Switch::Firewall => config.enable_firewall,
            Switch::Abs => config.enable_abs,
            Switch::AbsAttack => config.enable_abs_attack,
            Switch::AseDetectedAttack => config.enable_ase_detected_attack,
        }
    }
}

/// The switches a decision depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switches {
    /// `enable_firewall`.
    pub firewall: bool,
    /// `enable_abs_attack`: ABS entries block.
    pub abs_attack: bool,
    /// `enable_ase_detected_attack`: real-time entries block and are recorded.
    pub ase_detected: bool,
    /// `enable_xff`.
    pub xff: bool,
    /// `duplicate_identifiers = reject`.
    pub reject_duplicates: bool,
}

impl Switches {
    /// The deny sources that block under these switches.
    pub fn deny_mask(&self) -> u8 {
        let mut m = Source::Manual.bit();
        if self.abs_attack {
            m |= Source::Abs.bit();
        }
        if self.ase_detected {
            m |= Source::REALTIME;
        }
        m
    }
}
