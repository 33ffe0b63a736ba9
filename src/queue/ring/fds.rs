//! An item's descriptors: sent on the queue's `SOCK_SEQPACKET` pair,
//! tagged with the item's sequence number, and claimed by its consumer.
#![allow(unsafe_code)]

use super::*;
use crate::codec::le;

impl<M: RingMem> Core<M> {
    /// Sends an item's descriptors, tagged with its sequence number, in
    /// batches the kernel accepts.
    pub(super) fn send_fds(&self, seq: u64, fds: &[OwnedFd]) -> Result<()> {
        for (i, batch) in fds.chunks(sys::MAX_FDS_PER_MSG).enumerate() {
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&seq.to_le_bytes());
            tag[8..].copy_from_slice(&(i as u64).to_le_bytes());
            let borrowed: Vec<BorrowedFd<'_>> = batch.iter().map(AsFd::as_fd).collect();
            sys::send_msg(self.fd_tx.as_fd(), &[IoSlice::new(&tag)], &borrowed)?;
        }
        Ok(())
    }

    /// Takes the descriptors of item `seq` from the socket (holding the get
    /// lock). Messages of earlier items (whose producer or consumer died)
    /// are discarded. An item whose descriptors are not there — a consumer
    /// died after claiming them — is an error for that item only.
    pub(super) fn take_fds(&self, seq: u64, n: usize) -> Result<Vec<OwnedFd>> {
        let s = self.st();
        let lost = || {
            Error::Decode(format!(
                "the {n} handle(s) of this queue item were lost (a process died while receiving them)"
            ))
        };
        if s.fd_claim.load(Ordering::Relaxed) == seq.wrapping_add(1) {
            return Err(lost());
        }
        s.fd_claim.store(seq.wrapping_add(1), Ordering::Relaxed);
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let mut tag = [0u8; 16];
            let mut q = VecDeque::new();
            match sys::recv_msg_into(self.fd_rx.as_fd(), &mut tag, &mut q, true) {
                Ok(16) => {
                    let s = le::u64_at(&tag, 0);
                    if s == seq {
                        got.extend(q);
                    } else if seq.wrapping_sub(s) < u64::MAX / 2 {
                        // An earlier item's: left over, drop it.
                        continue;
                    } else {
                        return Err(lost());
                    }
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(lost()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }
}
