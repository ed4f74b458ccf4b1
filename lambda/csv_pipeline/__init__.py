"""CSV → DynamoDB ingestion Lambda (standard library + boto3 only).

Handler: ``csv_pipeline.handler.lambda_handler``.
"""
