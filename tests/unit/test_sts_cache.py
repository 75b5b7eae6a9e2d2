"""Cache decisions (RFC 8461 §3.3, §5.1, §10.2): fresh / same id / new id / expired / fetch failed."""

from mxsec.sts.cache import (
    CacheTimes,
    FailureMark,
    Refresh,
    RefreshTiming,
    Step,
    after_failed_fetch,
    next_step,
    refresh_due,
    usable,
)
from mxsec.sts.record import RecordSelection, parse_record
from mxsec.results import ResultType

T0 = 1_700_000_000.0
DAY = 86400.0


def cached(pid="abc", age=0.0, max_age=DAY * 7, checked_age=None):
    fetched = T0 - age
    return CacheTimes(pid, fetched, fetched + max_age, T0 - (age if checked_age is None else checked_age))


def sel(pid):
    return RecordSelection(parse_record(f"v=STSv1; id={pid}"), None)


NO_RECORD = RecordSelection(None, "no-record")


def test_sts_d_1_usable_until_max_age_after_last_fetch():
    c = cached(age=0, max_age=100)
    assert usable(c, T0 + 99.9)
    assert not usable(c, T0 + 100)
    assert not usable(None, T0)


def test_sts_d_2_same_id_serves_cache_without_fetch():
    assert next_step(cached("abc"), sel("abc"), T0) is Step.SERVE_CACHED


def test_sts_d_2_new_id_fetches():
    assert next_step(cached("abc"), sel("def"), T0) is Step.FETCH


def test_nothing_cached_and_record_present_fetches():
    assert next_step(None, sel("abc"), T0) is Step.FETCH


def test_sts_d_3_sts_a_10_missing_record_keeps_usable_cache():
    assert next_step(cached("abc"), NO_RECORD, T0) is Step.SERVE_CACHED


def test_sts_a_10_dns_error_keeps_usable_cache():
    assert next_step(cached("abc"), None, T0) is Step.SERVE_CACHED


def test_sts_b_13_missing_record_and_no_cache_is_no_policy():
    assert next_step(None, NO_RECORD, T0) is Step.NO_POLICY
    assert next_step(None, None, T0) is Step.NO_POLICY


def test_expired_cache_with_same_id_fetches_again():
    assert next_step(cached("abc", age=DAY * 8), sel("abc"), T0) is Step.FETCH


def test_expired_cache_without_record_is_no_policy():
    assert next_step(cached("abc", age=DAY * 8), NO_RECORD, T0) is Step.NO_POLICY


def test_sts_b_11_failed_fetch_held_back_for_five_minutes_same_id():
    mark = FailureMark("def", T0 - 299, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 404")
    assert next_step(None, sel("def"), T0, last_failure=mark) is Step.FETCH_HELD_BACK
    later = FailureMark("def", T0 - 301, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 404")
    assert next_step(None, sel("def"), T0, last_failure=later) is Step.FETCH


def test_sts_b_11_failure_of_another_id_does_not_hold_back():
    mark = FailureMark("old", T0 - 10, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 404")
    assert next_step(None, sel("new"), T0, last_failure=mark) is Step.FETCH


def test_sts_b_14_sts_d_4_failed_fetch_falls_back_to_usable_cache():
    assert after_failed_fetch(cached(), T0) is True
    assert after_failed_fetch(cached(age=DAY * 8), T0) is False
    assert after_failed_fetch(None, T0) is False


def test_force_fetch_ignores_same_id_ec_19():
    assert next_step(cached("abc"), sel("abc"), T0, force_fetch=True) is Step.FETCH


def test_sts_d_5_refresh_plan_for_long_policy():
    timing = RefreshTiming(recheck_after=3600, force_fetch_after=DAY)
    assert refresh_due(cached(age=10), T0, timing) is Refresh.NOTHING
    assert refresh_due(cached(age=3601), T0, timing) is Refresh.RECHECK
    # EC-19 / STS-D-6: the body is refetched at least daily even when the id never changes
    assert refresh_due(cached(age=DAY + 1, checked_age=0), T0, timing) is Refresh.REFETCH


def test_sts_d_6_short_policy_refetched_before_half_its_life():
    timing = RefreshTiming()
    c = cached(age=51, max_age=100, checked_age=0)
    assert refresh_due(c, T0, timing) is Refresh.REFETCH
    c = cached(age=26, max_age=100, checked_age=26)
    assert refresh_due(c, T0, timing) is Refresh.RECHECK
