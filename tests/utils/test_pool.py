"""The package's one spawn pool: results in task order, a worker's exception raised with its traceback, a failing
initializer and a SIGKILLed worker are errors naming what happened (never a hang)."""
import pytest

from posedreamer_mm.utils.pool import RemoteTraceback, SpawnPool, WorkerDiedError, WorkerSetupError
from tests.utils import pool_workers


@pytest.mark.timeout(240)
def test_order_errors_and_a_killed_worker():
    with SpawnPool(1, pool_workers.square, pool_workers.init, describe=lambda t: f'task {t}', name='test') as pool:
        assert list(pool.imap([0, 1, 2, 4, 6], max_in_flight=3)) == [0, 1, 4, 16, 36]
        with pytest.raises(ValueError, match='three is refused') as info:
            list(pool.imap([1, 3]))
        assert isinstance(info.value.__cause__, RemoteTraceback) and 'square' in str(info.value.__cause__)
        with pytest.raises(WorkerDiedError, match=r'test worker process \d+ killed by SIGKILL while working on task 5'):
            list(pool.imap([4, 5, 6]))


@pytest.mark.timeout(240)
def test_a_failing_initializer_stops_the_pool():
    with SpawnPool(1, pool_workers.square, pool_workers.init, initargs=(True,)) as pool:
        with pytest.raises(WorkerSetupError, match='(?s)failed to start.*initializer broke'):
            list(pool.imap([1]))
