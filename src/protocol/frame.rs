//! Walks message boundaries in a byte stream without copying or decoding it.
//!
//! Bytes of messages nobody needs to see are forwarded as soon as they
//! arrive, even half a message at a time, so a 1 GB DataRow costs no memory.
//! Messages a caller wants to see (`whole`) are only forwarded once complete.

/// What to do with the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes from the start of the buffer unchanged.
    Forward(usize),
    /// A whole message of this many bytes (tag and length included) starts
    /// the buffer and the visitor asked to handle it: the caller consumes it.
    Message(usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
    /// The message starting the buffer declares an impossible length.
    Invalid(u32),
}

/// Frame state carried from one read to the next.
#[derive(Debug)]
pub struct FrameScanner {
    /// Bytes of the current pass-through message still to forward.
    remaining: usize,
    /// A visited message the visitor stopped on, handed over on the next call.
    stopped: Option<usize>,
    /// The largest length field accepted (the length counts itself, not the tag).
    max_len: u32,
}

impl FrameScanner {
    pub fn new(max_len: u32) -> Self {
        Self {
            remaining: 0,
            stopped: None,
            max_len,
        }
    }

    /// True when the last forwarded byte ended a message.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Decides what to do with the front of `buf`.
    ///
    /// `whole(tag)` names the messages that must be complete before they are
    /// forwarded; each is then shown to `visit`, which returns `true` to let
    /// it pass with the rest or `false` to have it handed over as
    /// [`Step::Message`]. A visited message is shown once.
    pub fn scan(
        &mut self,
        buf: &[u8],
        whole: impl Fn(u8) -> bool,
        mut visit: impl FnMut(&[u8]) -> bool,
    ) -> Step {
        if let Some(total) = self.stopped {
            // The caller forwarded what preceded it; the message now starts `buf`.
            if buf.len() >= total {
                self.stopped = None;
                return Step::Message(total);
            }
            return Step::NeedMore;
        }
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.len() - pos);
                pos += n;
                self.remaining -= n;
                if self.remaining > 0 {
                    return if pos > 0 {
                        Step::Forward(pos)
                    } else {
                        Step::NeedMore
                    };
                }
            }
            let rest = &buf[pos..];
            if rest.len() < 5 {
                return if pos > 0 {
                    Step::Forward(pos)
                } else {
                    Step::NeedMore
                };
            }
            let tag = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if !(4..=self.max_len).contains(&len) {
                return if pos > 0 {
                    Step::Forward(pos)
                } else {
                    Step::Invalid(len)
                };
            }
            let total = len as usize + 1;
            if whole(tag) {
                if rest.len() < total {
                    return if pos > 0 {
                        Step::Forward(pos)
                    } else {
                        Step::NeedMore
                    };
                }
                if !visit(&rest[..total]) {
                    if pos > 0 {
                        self.stopped = Some(total);
                        return Step::Forward(pos);
                    }
                    return Step::Message(total);
                }
                pos += total;
            } else {
                self.remaining = total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::protocol::put_message(&mut out, tag, body);
        out
    }

    #[test]
    fn forwards_complete_and_partial_messages() {
        let mut s = FrameScanner::new(1 << 30);
        let mut buf = msg(b'D', b"0123456789");
        buf.extend(msg(b'C', b"SELECT 1\0"));
        // Everything at once.
        assert_eq!(s.scan(&buf, |_| false, |_| true), Step::Forward(buf.len()));
        assert!(s.at_boundary());
        // Three bytes into the first body: the first 8 bytes pass, then the rest.
        assert_eq!(s.scan(&buf[..8], |_| false, |_| true), Step::Forward(8));
        assert!(!s.at_boundary());
        assert_eq!(
            s.scan(&buf[8..], |_| false, |_| true),
            Step::Forward(buf.len() - 8)
        );
        assert!(s.at_boundary());
    }

    #[test]
    fn an_empty_buffer_mid_message_needs_more() {
        let mut s = FrameScanner::new(1 << 30);
        let buf = msg(b'D', &[7; 100]);
        assert_eq!(s.scan(&buf[..50], |_| false, |_| true), Step::Forward(50));
        assert_eq!(s.scan(&[], |_| false, |_| true), Step::NeedMore);
        assert_eq!(s.scan(&buf[50..], |_| false, |_| true), Step::Forward(55));
    }

    #[test]
    fn whole_messages_wait_until_complete_and_are_visited_once() {
        let mut s = FrameScanner::new(1 << 30);
        let mut buf = msg(b'D', b"row");
        let z = msg(b'Z', b"I");
        buf.extend(&z);
        let mut seen = 0;
        // The ReadyForQuery is cut short: only the DataRow passes.
        let cut = buf.len() - 1;
        let step = s.scan(
            &buf[..cut],
            |t| t == b'Z',
            |_| {
                seen += 1;
                true
            },
        );
        assert_eq!(step, Step::Forward(8));
        assert_eq!(seen, 0);
        let step = s.scan(
            &buf[8..],
            |t| t == b'Z',
            |m| {
                seen += 1;
                m == z.as_slice()
            },
        );
        assert_eq!(step, Step::Forward(6));
        assert_eq!(seen, 1);
    }

    #[test]
    fn a_stopped_message_is_handed_over_after_what_precedes_it() {
        let mut s = FrameScanner::new(1 << 30);
        let mut buf = msg(b'S', b"a\0b\0");
        let k = msg(b'K', &[0; 8]);
        buf.extend(&k);
        let mut visits = 0;
        let mut visit = |m: &[u8]| {
            visits += 1;
            m[0] != b'K'
        };
        assert_eq!(s.scan(&buf, |_| true, &mut visit), Step::Forward(9));
        assert_eq!(s.scan(&buf[9..], |_| true, &mut visit), Step::Message(13));
        assert_eq!(visits, 2);
    }

    #[test]
    fn impossible_lengths_are_reported() {
        let mut s = FrameScanner::new(100);
        assert_eq!(
            s.scan(&[b'Q', 0, 0, 0, 3], |_| true, |_| true),
            Step::Invalid(3)
        );
        assert_eq!(
            s.scan(&[b'Q', 0, 0, 1, 0], |_| true, |_| true),
            Step::Invalid(256)
        );
        assert_eq!(s.scan(&[b'Q', 0, 0], |_| true, |_| true), Step::NeedMore);
    }
}
