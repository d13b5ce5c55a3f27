//! The allocator's tables and rules.
#![allow(unused)]
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

#[derive(Debug, Default)]
pub(super) struct State {
    pools: BTreeMap<String, Pool>,
}

impl State {
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> PoolsReport { todo!() }
    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> { todo!() }
    pub fn release(&mut self, key: &ServiceKey) { todo!() }
    pub fn held(&self, key: &ServiceKey) -> &[(IpAddr, String)] { todo!() }
    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> { todo!() }
    pub fn pool_counts(&self, name: &str) -> PoolCounts { todo!() }
    pub fn pools(&self) -> &BTreeMap<String, Pool> { &self.pools }
    pub fn footprint(&self) -> usize { todo!() }
}
