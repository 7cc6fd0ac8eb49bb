//! [`Owned`]: a module object that Envoy holds as an opaque pointer, typed on our side.
//!
//! Envoy stores three kinds of module pointer (a filter config, a per-route config, a stream) and
//! passes each back to the hooks, or through a callback, as a bare `void*`. Each crossing here
//! is typed instead: a hook's signature says which `Owned<T>` it receives, so a pointer can only
//! be read back as the type it was made from.

use std::ffi::c_void;
use std::marker::PhantomData;

/// A `T` boxed by [`Owned::into_raw`] and handed to Envoy, or null; the same `void*` in the ABI.
///
/// It is a handle, not an owner: Envoy keeps the pointer, and copies of it come back in every
/// hook. Ownership returns to Rust once, through [`Owned::take`], when Envoy destroys the object.
#[repr(transparent)]
pub(super) struct Owned<T> {
    ptr: *const c_void,
    /// Ties the pointer to `T` (a raw pointer, so `Owned` is neither `Send` nor `Sync`).
    object: PhantomData<*const T>,
}

// Manual impls: a handle is copyable whatever `T` is (derive would require `T: Copy`).
impl<T> Clone for Owned<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Owned<T> {}

impl<T> PartialEq for Owned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr
    }
}

impl<T> Eq for Owned<T> {}

impl<T> std::fmt::Debug for Owned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Owned").field(&self.ptr).finish()
    }
}

impl<T> Owned<T> {
    /// No object: what a hook returns to refuse, and what Envoy may pass for a missing one.
    pub(super) const NULL: Self = Self {
        ptr: std::ptr::null(),
        object: PhantomData,
    };

    /// Boxes `value` and gives up ownership of it to the pointer.
    pub(super) fn into_raw(value: T) -> Self {
        Self {
            ptr: Box::into_raw(Box::new(value)).cast_const().cast(),
            object: PhantomData,
        }
    }

    /// Whether this is [`Owned::NULL`].
    pub(super) fn is_null(self) -> bool {
        self.ptr.is_null()
    }

    /// The object, or `None` for null.
    ///
    /// # Safety
    /// The pointer must be null or come from [`Owned::into_raw`], not be taken before `'a` ends,
    /// and the object must not be borrowed mutably meanwhile.
    pub(super) unsafe fn borrow<'a>(self) -> Option<&'a T> {
        // SAFETY: per the contract, a live `T` that into_raw boxed, or null; shared for 'a.
        unsafe { self.ptr.cast::<T>().as_ref() }
    }

    /// The object, mutably, or `None` for null.
    ///
    /// # Safety
    /// As [`Owned::borrow`], and no other reference to the object may be used while this one is.
    pub(super) unsafe fn borrow_mut<'a>(self) -> Option<&'a mut T> {
        // SAFETY: per the contract, a live `T` that into_raw boxed, or null; exclusive for 'a.
        unsafe { self.ptr.cast::<T>().cast_mut().as_mut() }
    }

    /// Takes the object back from the pointer, or `None` for null.
    ///
    /// # Safety
    /// The pointer must be null or come from [`Owned::into_raw`] and not have been taken yet; no
    /// borrow of the object may outlive this call, and the pointer is dangling after it.
    pub(super) unsafe fn take(self) -> Option<Box<T>> {
        // SAFETY: per the contract, the Box that into_raw leaked, reclaimed exactly once.
        (!self.is_null()).then(|| unsafe { Box::from_raw(self.ptr.cast::<T>().cast_mut()) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Owned;

    #[test]
    fn an_object_comes_back_as_it_went_in_and_is_freed_once_taken() {
        let object = Arc::new(7);
        let owned = Owned::into_raw(Arc::clone(&object));
        assert!(!owned.is_null());
        // SAFETY: made just above, not taken yet, nothing else borrows it.
        assert_eq!(unsafe { owned.borrow() }.map(|o| **o), Some(7));
        assert_eq!(Arc::strong_count(&object), 2);
        // SAFETY: made above and taken only here.
        drop(unsafe { owned.take() });
        assert_eq!(Arc::strong_count(&object), 1);
    }

    #[test]
    fn null_borrows_and_takes_nothing() {
        let null = Owned::<String>::NULL;
        assert!(null.is_null());
        // SAFETY: null is allowed by every contract and reads nothing.
        unsafe {
            assert!(null.borrow().is_none());
            assert!(null.borrow_mut().is_none());
            assert!(null.take().is_none());
        }
    }
}
