"""Exact theory on finite tables: eq. S1–S8 identities, Gibbs chains and Theorem 2.1 (float64).

Tables are 2-D arrays ``p[x, y] = P(X = x, Y = y)``; binary states are indexed MSB-first
(:func:`binary_states`). The identities and the theorem: docs/design.md §1.
"""

from mmvi.theory.chains import (
    chain_joint,
    check_irreducible,
    check_transition,
    gibbs_transitions,
    is_irreducible,
    stationary_distribution,
    stationary_joint,
    stationary_power_iteration,
    transition_x,
    transition_y,
)
from mmvi.theory.identities import (
    IdentityTerms,
    c1,
    c2,
    check_table,
    conditional_kls,
    conditionals,
    identity_terms,
    kl_marginals,
    l_nll,
    l_vi,
    marginals,
    mutual_information,
)
from mmvi.theory.measures import (
    MEASURE_KEYS,
    empirical_table,
    make_data_table,
    plot_theorem21,
    sample_from_table,
    theorem21_measures,
)
from mmvi.theory.rbm_tables import binary_states, rbm_joint_table, rbm_log_joint_table, state_index

__all__ = [
    "MEASURE_KEYS",
    "IdentityTerms",
    "binary_states",
    "c1",
    "c2",
    "chain_joint",
    "check_irreducible",
    "check_table",
    "check_transition",
    "conditional_kls",
    "conditionals",
    "empirical_table",
    "gibbs_transitions",
    "identity_terms",
    "is_irreducible",
    "kl_marginals",
    "l_nll",
    "l_vi",
    "make_data_table",
    "marginals",
    "mutual_information",
    "plot_theorem21",
    "rbm_joint_table",
    "rbm_log_joint_table",
    "sample_from_table",
    "state_index",
    "stationary_distribution",
    "stationary_joint",
    "stationary_power_iteration",
    "theorem21_measures",
    "transition_x",
    "transition_y",
]
