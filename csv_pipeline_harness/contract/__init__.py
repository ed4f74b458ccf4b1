"""The data contract's tests: what any implementation of the pipeline must do.

They talk to the pipeline only through S3 and DynamoDB (and invoke the
function with hand-made S3 events), never through this package's Lambda
code, so they judge any implementation deployed in its place::

    pytest --pyargs csv_pipeline_harness.contract \
        --csv-pipeline-lambda-source DIR --csv-pipeline-lambda-handler module.function

:mod:`csv_pipeline_harness.contract.limits` holds the contract's numbers,
:mod:`csv_pipeline_harness.contract.strategies` generates documents and
:mod:`csv_pipeline_harness.contract.oracle` says what the table must then hold.
"""
