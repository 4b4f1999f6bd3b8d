"""Approximate minimum degree (AMD) fill-reducing ordering, as Numba kernels.

The ordering follows the published algorithm (Amestoy, Davis & Duff, "An approximate
minimum degree ordering algorithm", SIAM J. Matrix Anal. Appl. 17(4), 1996; Davis,
"Direct Methods for Sparse Linear Systems", SIAM 2006, ch. 7):

* the graph of the matrix is kept as a *quotient graph*: every eliminated pivot becomes
  an *element* whose list holds the variables of its front, and the elements next to
  the pivot are absorbed into it, so the lists take about the space of the matrix's own
  pattern. A new element is written after the last list; when the room runs out, the
  lists still alive are compacted (and the workspace grows only if that is not enough);
* the pivot is a variable of minimum *approximate external degree*, the bound of the
  paper computed from ``|Le \\ Lme|`` for every element ``e`` next to the new element;
* variables whose only neighbour is the new element are eliminated with the pivot
  (mass elimination); variables with identical lists, found by hashing, are merged into
  supervariables; elements whose variables all lie in the new element are absorbed into
  it (aggressive absorption);
* rows much denser than the others (degree above ``max(16, dense_factor·√n)``) are
  removed before the ordering and placed last. Their neighbours enter the degree lists
  at their full degree, dense rows counted, until their first degree update: on the
  KKT matrix of an entropy problem (31 dense rows) this gives 306k nonzeros in L, the
  true initial degrees 492k (SuiteSparse AMD: 399k);
* the assembly tree (elements linked to the element that absorbed them) is post-ordered
  at the end, the child with the largest front last: the fill is unchanged and the
  factorisation touches memory in a friendlier order.

The code is written from the papers' descriptions, not from any implementation.

Nodes are identified by their index ``0..n-1`` whether they are variables or elements
(an element takes the index of the pivot that created it). Every list lives in one
workspace array ``iw``: node ``i``'s list is ``iw[start[i]:start[i] + size[i]]``; a
variable's list holds first its ``nelem[i]`` elements, then its variables.
"""

from __future__ import annotations

import numba
import numpy as np

# States of a node.
_VARIABLE = 0          # principal variable not eliminated yet
_ELEMENT = 1           # element not absorbed yet (a root of the assembly tree so far)
_ABSORBED = 2          # element absorbed into another element
_MERGED = 3            # variable merged into a supervariable or eliminated with a pivot
_DENSE = 4             # dense row, left out of the ordering and placed last

#: Index cast for the hot loops: Numba checks every signed index for negative
#: (wrap-around) values, not unsigned ones; the loops below index only with
#: non-negative positions and node numbers, and the cast makes them about 20% faster.
_ix = numba.uint64


@numba.njit(nogil=True, cache=True)
def _quotient_graph(n, indptr, indices, dense_factor, room):
    """Adjacency lists of the symmetric graph of an upper-triangular CSC pattern.

    Entries on or below the diagonal are ignored. Rows whose degree exceeds
    ``max(16, dense_factor * sqrt(n))`` (no row when ``dense_factor < 0``) are marked
    dense and left out of every list.

    Parameters
    ----------
    n : int
        Order of the matrix.
    indptr, indices : ndarray of int32 or int64
        The CSC pattern.
    dense_factor : float
        Dense-row threshold factor.
    room : int
        Free space left after the lists in ``iw``; negative for the default,
        ``used // 5 + 2 n``.

    Returns
    -------
    iw : ndarray of int64
        Workspace holding the lists, with free room after them.
    nodes : ndarray of int64, shape (4, n)
        Rows ``start, size, degree``: position and length of each list, and each node's
        degree in the graph with the dense rows (AMD's initial approximate degree: a
        neighbour of dense rows starts high in the degree lists); the last row is
        scratch. One array rather than three: fewer objects cross the Python boundary.
    state : ndarray of int8
        ``_DENSE`` for dense rows, ``_VARIABLE`` otherwise.
    used : int
        End of the lists in ``iw``.
    ndense : int
        Number of dense rows.
    error : int
        0; 1 when ``indptr`` decreases or overruns ``indices``; 2 for a row index out
        of range (the other outputs are then meaningless).
    """
    nodes = np.zeros((4, n), dtype=np.int64)
    start = nodes[0]
    size = nodes[1]
    degree = nodes[2]
    length = nodes[3]
    state = np.zeros(n, dtype=np.int8)
    iw = np.empty(0, dtype=np.int64)
    if indptr[0] < 0 or indptr[n] > indices.shape[0]:
        return iw, nodes, state, 0, 0, 1
    for j in range(n):
        if indptr[j + 1] < indptr[j]:
            return iw, nodes, state, 0, 0, 1
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[_ix(p)]
            if i < j:
                if i < 0:
                    return iw, nodes, state, 0, 0, 2
                degree[_ix(i)] += 1
                degree[_ix(j)] += 1
            elif i >= n:
                return iw, nodes, state, 0, 0, 2
    threshold = float(n)
    if dense_factor >= 0.0:
        threshold = min(threshold, max(16.0, dense_factor * np.sqrt(float(n))))
    ndense = 0
    for i in range(n):
        if degree[i] > threshold:
            state[i] = _DENSE
            ndense += 1
    if ndense == 0:
        for i in range(n):  # a loop: a slice assignment compiles a shape check for seconds
            length[i] = degree[i]
    else:
        for j in range(n):
            if state[_ix(j)] == _DENSE:
                continue
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[_ix(p)]
                if i < j and state[_ix(i)] != _DENSE:
                    length[_ix(i)] += 1
                    length[_ix(j)] += 1
    used = 0
    for i in range(n):
        start[i] = used
        used += length[i]
    if room < 0:
        room = used // 5 + 2 * n
    iw = np.empty(used + room, dtype=np.int64)
    for j in range(n):
        if state[_ix(j)] == _DENSE:
            continue
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[_ix(p)]
            if i < j and state[_ix(i)] != _DENSE:
                q = start[_ix(i)] + size[_ix(i)]
                iw[_ix(q)] = j
                size[_ix(i)] += 1
                q = start[_ix(j)] + size[_ix(j)]
                iw[_ix(q)] = i
                size[_ix(j)] += 1
    return iw, nodes, state, used, ndense, 0


@numba.njit(nogil=True, cache=True)
def _compact(iw, start, size, state, used):
    """Move the lists of live nodes to the front of ``iw``, dropping the space of dead
    ones.

    The first entry of each live list is replaced by ``-(node + 1)`` (entries are
    otherwise non-negative) and kept in ``start[node]`` meanwhile, so one sweep of
    ``iw`` finds the lists in memory order.

    Parameters
    ----------
    iw, start, size : ndarray of int64
        The lists (modified in place).
    state : ndarray of int8
        Node states: the lists of variables and unabsorbed elements are kept.
    used : int
        End of the lists in ``iw``.

    Returns
    -------
    int
        The new end of the lists.
    """
    n = start.shape[0]
    for node in range(n):
        if (state[node] == _VARIABLE or state[node] == _ELEMENT) and size[node] > 0:
            p = start[node]
            start[node] = iw[p]
            iw[p] = -node - 1
    src = 0
    dst = 0
    while src < used:
        value = iw[src]
        if value >= 0:
            src += 1
            continue
        node = -value - 1
        iw[dst] = start[node]
        start[node] = dst
        length = size[node]
        for t in range(1, length):
            iw[dst + t] = iw[src + t]
        dst += length
        src += length
    return dst


@numba.njit(nogil=True, cache=True)
def _eliminate(iw, start, size, degree, state, used, ndense, aggressive):
    """Minimum approximate degree elimination on the quotient graph.

    Parameters
    ----------
    iw, start, size, degree, state, used, ndense
        As returned by :func:`_quotient_graph` (modified in place).
    aggressive : bool
        Absorb every element whose variables all lie in the new element.

    Returns
    -------
    parent : ndarray of int64
        For an absorbed element, the element that absorbed it; for a merged variable,
        the supervariable or pivot it was merged into; ``-1`` otherwise.
    pivots : ndarray of int64
        The pivots (elements) in elimination order, first ``npivots`` entries.
    npivots : int
        Number of pivots.
    front : ndarray of int64
        Front size (pivot block plus its element's variables) of each element.
    """
    n = start.shape[0]
    # One allocation for every work vector (small problems are dominated by fixed costs).
    work = np.empty(13 * n + 1, dtype=np.int64)
    weight = work[0:n]                 # supervariable size; < 0 while in the new element
    nelem = work[n:2 * n]              # number of elements at the head of a variable's list
    parent = work[2 * n:3 * n]
    outside = work[3 * n:4 * n]        # stamp + |Le \ Lme| for the elements e met this
    #                                    step; -1 once absorbed
    seen = work[4 * n:5 * n]           # stamps for comparing lists
    after = work[5 * n:6 * n]          # degree lists: next and previous variable
    before = work[6 * n:7 * n]
    hash_head = work[7 * n:8 * n]
    hash_next = work[8 * n:9 * n]
    hash_key = work[9 * n:10 * n]
    pivots = work[10 * n:11 * n]
    front = work[11 * n:12 * n]
    bucket = work[12 * n:13 * n + 1]   # first variable of each degree list
    for i in range(n):
        weight[i] = 1
        nelem[i] = 0
        parent[i] = -1
        outside[i] = 0
        seen[i] = 0
        after[i] = -1
        before[i] = -1
        hash_head[i] = -1
        front[i] = 0
        bucket[i] = -1
    bucket[n] = -1

    for i in range(n):
        if state[i] == _DENSE:
            weight[i] = 0
            continue
        d = degree[i]
        head = bucket[d]
        after[i] = head
        if head != -1:
            before[head] = i
        bucket[d] = i

    nlive = n - ndense        # variables to order
    nprincipal = nlive        # principal variables left (unweighted)
    eliminated = 0            # variables eliminated so far (weighted)
    mindeg = 0
    stamp = 1
    compare = 1
    npivots = 0

    while eliminated < nlive:
        # ---- pivot: a variable of minimum approximate degree -------------------------
        while bucket[mindeg] == -1:
            mindeg += 1
        me = bucket[mindeg]
        nxt = after[me]
        bucket[mindeg] = nxt
        if nxt != -1:
            before[nxt] = -1
        pivots[npivots] = me
        npivots += 1
        npiv = weight[me]
        eliminated += npiv
        nprincipal -= 1
        weight[me] = -npiv    # keeps me out of the new element and out of pruned lists

        # ---- the new element Lme: union of me's elements and variables ---------------
        degme = 0
        ne_me = nelem[me]
        pme = start[me]
        if ne_me == 0:
            # Only variables: build the element in place.
            lo = pme
        else:
            bound = size[me] - ne_me
            for p in range(pme, pme + ne_me):
                e = iw[_ix(p)]
                if state[_ix(e)] == _ELEMENT:
                    bound += size[_ix(e)]
            if bound > nprincipal:
                bound = nprincipal
            if used + bound > iw.shape[0]:
                used = _compact(iw, start, size, state, used)
                if used + bound > iw.shape[0]:
                    grown = np.empty(max(2 * iw.shape[0], used + bound + n), dtype=np.int64)
                    for p in range(used):  # a loop: a slice assignment compiles slowly
                        grown[_ix(p)] = iw[_ix(p)]
                    iw = grown
                pme = start[me]
            lo = used
        pn = lo
        for k in range(ne_me + 1):
            if k < ne_me:
                e = iw[pme + k]
                if state[_ix(e)] != _ELEMENT:
                    continue
                first = start[_ix(e)]
                last = first + size[_ix(e)]
            else:
                e = me
                first = pme + ne_me
                last = pme + size[me]
            for p in range(first, last):
                j = iw[_ix(p)]
                wj = weight[_ix(j)]
                if wj > 0:
                    degme += wj
                    weight[_ix(j)] = -wj
                    iw[_ix(pn)] = j
                    pn += 1
                    a = before[_ix(j)]
                    b = after[_ix(j)]
                    if b != -1:
                        before[b] = a
                    if a != -1:
                        after[a] = b
                    else:
                        bucket[degree[_ix(j)]] = b
            if e != me:
                state[_ix(e)] = _ABSORBED
                parent[_ix(e)] = me
                size[_ix(e)] = 0
                outside[_ix(e)] = -1
        if ne_me != 0:
            used = pn
        start[me] = lo
        size[me] = pn - lo
        state[me] = _ELEMENT
        nelem[me] = 0
        hi = lo + size[me]

        # ---- |Le \ Lme| for every element e next to a variable of Lme ----------------
        for p in range(lo, hi):
            i = iw[_ix(p)]
            wi = -weight[_ix(i)]
            q0 = start[_ix(i)]
            for q in range(q0, q0 + nelem[_ix(i)]):
                e = iw[_ix(q)]
                oe = outside[_ix(e)]
                if oe >= stamp:
                    outside[_ix(e)] = oe - wi
                elif oe >= 0:
                    outside[_ix(e)] = degree[_ix(e)] + stamp - wi

        # ---- approximate degrees, pruning, mass elimination, hashing -----------------
        for p in range(lo, hi):
            i = iw[_ix(p)]
            p1 = start[_ix(i)]
            p2 = p1 + nelem[_ix(i)]
            pend = p1 + size[_ix(i)]
            pn = p1
            h = 0
            deg = 0
            for q in range(p1, p2):
                e = iw[_ix(q)]
                oe = outside[_ix(e)]
                if oe < 0:
                    continue
                ext = oe - stamp
                if ext > 0:
                    deg += ext
                    iw[_ix(pn)] = e
                    pn += 1
                    h += e
                elif aggressive:
                    state[_ix(e)] = _ABSORBED
                    parent[_ix(e)] = me
                    size[_ix(e)] = 0
                    outside[_ix(e)] = -1
                else:
                    iw[_ix(pn)] = e
                    pn += 1
                    h += e
            kept_elements = pn - p1
            p3 = pn
            for q in range(p2, pend):
                j = iw[_ix(q)]
                wj = weight[_ix(j)]
                if wj > 0:
                    deg += wj
                    iw[_ix(pn)] = j
                    pn += 1
                    h += j
            if kept_elements == 0 and pn == p3:
                # i is adjacent to me only: eliminate it together with me.
                wi = -weight[_ix(i)]
                parent[_ix(i)] = me
                degme -= wi
                npiv += wi
                eliminated += wi
                weight[_ix(i)] = 0
                state[_ix(i)] = _MERGED
                size[_ix(i)] = 0
                nprincipal -= 1
                continue
            if pn >= pend:
                raise RuntimeError("AMD: no room to link a variable to the new element")
            if deg < degree[_ix(i)]:
                degree[_ix(i)] = deg
            # me goes first: the first element moves behind the elements, the first
            # variable behind the variables.
            iw[_ix(pn)] = iw[_ix(p3)]
            iw[_ix(p3)] = iw[_ix(p1)]
            iw[_ix(p1)] = me
            size[_ix(i)] = pn - p1 + 1
            nelem[_ix(i)] = kept_elements + 1
            key = h % n
            hash_key[_ix(i)] = key
            hash_next[_ix(i)] = hash_head[key]
            hash_head[key] = i

        # ---- supervariables: merge the variables of Lme with identical lists ---------
        for p in range(lo, hi):
            i = iw[_ix(p)]
            if weight[_ix(i)] >= 0:
                continue
            key = hash_key[_ix(i)]
            j = hash_head[key]
            if j == -1:
                continue
            hash_head[key] = -1
            while j != -1:
                k = hash_next[_ix(j)]
                if k != -1:
                    length = size[_ix(j)]
                    ne = nelem[_ix(j)]
                    pj = start[_ix(j)]
                    for q in range(pj + 1, pj + length):   # the first entry is me
                        seen[iw[_ix(q)]] = compare
                    previous = j
                    while k != -1:
                        same = size[_ix(k)] == length and nelem[_ix(k)] == ne
                        if same:
                            pk = start[_ix(k)]
                            for q in range(pk + 1, pk + length):
                                if seen[iw[_ix(q)]] != compare:
                                    same = False
                                    break
                        if same:
                            parent[_ix(k)] = j
                            weight[_ix(j)] += weight[_ix(k)]
                            weight[_ix(k)] = 0
                            state[_ix(k)] = _MERGED
                            size[_ix(k)] = 0
                            nprincipal -= 1
                            hash_next[previous] = hash_next[_ix(k)]
                        else:
                            previous = k
                        k = hash_next[_ix(k)]
                    compare += 1
                j = hash_next[_ix(j)]

        # ---- final degrees of Lme's variables; Lme keeps its principal variables -----
        left = nlive - eliminated
        pn = lo
        for p in range(lo, hi):
            i = iw[_ix(p)]
            wi = -weight[_ix(i)]
            if wi <= 0:
                continue
            weight[_ix(i)] = wi
            d = degree[_ix(i)] + degme - wi
            if d > left - wi:
                d = left - wi
            head = bucket[d]
            after[_ix(i)] = head
            before[_ix(i)] = -1
            if head != -1:
                before[head] = i
            bucket[d] = i
            if d < mindeg:
                mindeg = d
            degree[_ix(i)] = d
            iw[_ix(pn)] = i
            pn += 1
        size[me] = pn - lo
        degree[me] = degme
        front[me] = npiv + degme
        weight[me] = 0
        stamp += nlive + 1
    return parent, pivots, npivots, front


@numba.njit(nogil=True, cache=True)
def _order(iw, nodes, state, used, ndense, aggressive):
    """The permutation: :func:`_eliminate` then :func:`_postorder`.

    Only :func:`_quotient_graph` sees the caller's arrays, so only it is compiled for
    each index type (int32, int64): the large kernels are compiled once.

    Parameters
    ----------
    iw, nodes, state, used, ndense
        As returned by :func:`_quotient_graph` (modified in place).
    aggressive : bool
        Aggressive element absorption.

    Returns
    -------
    ndarray of int64
        The permutation.
    """
    parent, pivots, npivots, front = _eliminate(iw, nodes[0], nodes[1], nodes[2], state,
                                                used, ndense, aggressive)
    return _postorder(state, parent, pivots, npivots, front)


@numba.njit(nogil=True, cache=True)
def _postorder(state, parent, pivots, npivots, front):
    """The permutation from the assembly tree.

    Elements come in a post-order of the tree (children in elimination order, except
    that the child with the largest front goes last), each followed by the variables
    merged into it; the dense rows come last.

    Parameters
    ----------
    state : ndarray of int8
        Final state of each node.
    parent, pivots, npivots, front
        As returned by :func:`_eliminate` (``parent`` is modified: path compression).

    Returns
    -------
    ndarray of int64
        The permutation.
    """
    n = state.shape[0]
    # Element that each merged variable was eliminated with (path compression).
    owner_count = np.zeros(n + 1, dtype=np.int64)
    for v in range(n):
        if state[v] != _MERGED:
            continue
        root = parent[v]
        while state[root] == _MERGED:
            root = parent[root]
        x = v
        while x != root:
            nx = parent[x]
            parent[x] = root
            x = nx
        owner_count[root + 1] += 1
    for v in range(n):
        owner_count[v + 1] += owner_count[v]
    members = np.empty(owner_count[n], dtype=np.int64)
    fill = owner_count[:n].copy()
    for v in range(n):
        if state[v] == _MERGED:
            e = parent[v]
            members[fill[e]] = v
            fill[e] += 1

    # Children lists in elimination order.
    child = np.full(n, -1, dtype=np.int64)
    sibling = np.full(n, -1, dtype=np.int64)
    for t in range(npivots - 1, -1, -1):
        e = pivots[t]
        if state[e] == _ABSORBED:
            par = parent[e]
            sibling[e] = child[par]
            child[par] = e
    # The child with the largest front goes last.
    for t in range(npivots):
        e = pivots[t]
        c = child[e]
        if c == -1 or sibling[c] == -1:
            continue
        best = c
        best_prev = -1
        prev = c
        x = sibling[c]
        while x != -1:
            if front[x] >= front[best]:
                best = x
                best_prev = prev
            prev = x
            x = sibling[x]
        if sibling[best] != -1:
            if best_prev == -1:
                child[e] = sibling[best]
            else:
                sibling[best_prev] = sibling[best]
            sibling[prev] = best
            sibling[best] = -1

    perm = np.empty(n, dtype=np.int64)
    stack = np.empty(max(npivots, 1), dtype=np.int64)
    k = 0
    for t in range(npivots):
        r = pivots[t]
        if state[r] != _ELEMENT:
            continue
        stack[0] = r
        top = 0
        while top >= 0:
            x = stack[top]
            c = child[x]
            if c != -1:
                child[x] = sibling[c]
                top += 1
                stack[top] = c
                continue
            top -= 1
            perm[k] = x
            k += 1
            for q in range(owner_count[x], owner_count[x + 1]):
                perm[k] = members[q]
                k += 1
    for v in range(n):
        if state[v] == _DENSE:
            perm[k] = v
            k += 1
    if k != n:
        raise RuntimeError("AMD: the ordering is not a permutation")
    return perm


def _index_array(a: np.ndarray) -> np.ndarray:
    """``a`` itself when it is a contiguous int32 or int64 vector, else an int64 copy."""
    a = np.asarray(a)
    if a.ndim == 1 and (a.dtype == np.int32 or a.dtype == np.int64) and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)


def amd_order(n: int, indptr: np.ndarray, indices: np.ndarray, dense_factor: float = 10.0,
              aggressive: bool = True) -> np.ndarray:
    """Approximate minimum degree ordering of a sparse symmetric matrix.

    Parameters
    ----------
    n : int
        Order of the matrix.
    indptr, indices : ndarray of int32 or int64
        Pattern of the matrix's upper triangle in canonical CSC form (no duplicate
        entries); diagonal entries may or may not be stored, entries below the diagonal
        are ignored. The arrays are read, never modified, and not copied when they are
        contiguous int32 or int64 vectors.
    dense_factor : float, optional
        Rows with more than ``max(16, dense_factor * sqrt(n))`` off-diagonal entries
        (in the full symmetric pattern) are removed before the ordering and placed
        last. A negative value keeps every row.
    aggressive : bool, optional
        Aggressive element absorption (AMD's default: it usually lowers the fill a
        little and speeds the ordering up).

    Returns
    -------
    ndarray of int64
        The permutation ``perm`` (length ``n``): the matrix to factor is
        ``A[perm][:, perm]``.

    Raises
    ------
    ValueError
        If the arrays do not describe an ``n × n`` pattern.
    """
    return _amd_order(n, indptr, indices, dense_factor, aggressive, -1)


def _amd_order(n: int, indptr: np.ndarray, indices: np.ndarray, dense_factor: float,
               aggressive: bool, room: int) -> np.ndarray:
    """:func:`amd_order` with ``room`` free entries after the quotient graph's lists
    (negative: the default); tests pass 0 to exercise compaction and growth."""
    n = int(n)
    if n < 0:
        raise ValueError("n must be non-negative")
    indptr = _index_array(indptr)
    indices = _index_array(indices)
    if indptr.shape[0] != n + 1:
        raise ValueError(f"indptr has length {indptr.shape[0]}, expected {n + 1}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    iw, nodes, state, used, ndense, error = _quotient_graph(
        n, indptr, indices, float(dense_factor), int(room))
    if error == 1:
        raise ValueError("indptr must be non-decreasing, from 0 to at most len(indices)")
    if error == 2:
        raise ValueError("row index out of range")
    return _order(iw, nodes, state, used, ndense, bool(aggressive))
