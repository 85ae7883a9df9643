//! Recording what a forward pass really runs.
//!
//! Every primitive layer reports its own cost to the recorder of the current thread while a
//! [`capture`] is open (otherwise recording is one thread-local check). The analyzer therefore
//! counts the layer objects the model runs, in the order it runs them, and nothing else.

use std::cell::RefCell;

use super::rules::LayerCost;

thread_local! {
    static RECORDER: RefCell<Option<Vec<LayerCost>>> = const { RefCell::new(None) };
}

/// Adds the cost made by `cost` to the open capture, if any (`cost` runs only then).
pub fn record(cost: impl FnOnce() -> LayerCost) {
    RECORDER.with(|r| {
        if let Some(records) = r.borrow_mut().as_mut() {
            records.push(cost());
        }
    });
}

/// Whether a capture is open on this thread (a fused kernel that records nothing itself runs
/// its layers one by one then, so that each records its own cost).
pub fn capturing() -> bool {
    RECORDER.with(|r| r.borrow().is_some())
}

/// Runs `f` with a capture open and returns its result with every cost recorded meanwhile.
pub fn capture<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<(T, Vec<LayerCost>), E> {
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            RECORDER.with(|r| r.borrow_mut().take());
        }
    }
    RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        assert!(r.is_none(), "trace::capture does not nest");
        *r = Some(Vec::new());
    });
    let close = Close;
    let out = f()?;
    let records = RECORDER.with(|r| r.borrow_mut().take()).unwrap_or_default();
    drop(close);
    Ok((out, records))
}
