"""The data contract's tests: what any implementation of the pipeline must do.

They talk to the pipeline only through S3 and DynamoDB (and invoke the
function with hand-made S3 events), never through this package's Lambda
code, so they judge any implementation deployed in its place::

    pytest --pyargs harness.contract --lambda-source DIR --lambda-handler module.function

:mod:`harness.contract.limits` holds the contract's numbers,
:mod:`harness.contract.strategies` generates documents and
:mod:`harness.contract.oracle` says what the table must then hold.
"""
