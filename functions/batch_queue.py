"""The batch queue's handlers (shared.batch): Azure runs them on as many instances as the
queue's length calls for; the local host polls Azurite's queue the same way."""
import azure.functions as func

from shared import batch

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%", connection="AzureWebJobsStorage")
def score_batch_lane(msg: func.QueueMessage) -> None:
    batch.run_lane(msg.get_body())


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
def end_batch_lane(msg: func.QueueMessage) -> None:
    batch.end_lane(msg.get_body())
