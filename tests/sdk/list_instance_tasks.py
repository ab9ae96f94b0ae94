"""Lists an instance's tasks through Huawei Cloud's official Python SDK (huaweicloudsdkiotdm).

Usage: list_instance_tasks.py ENDPOINT PROJECT_ID AK SK INSTANCE_ID [LIMIT]

Follows the page marker as a caller of the SDK does, and prints one JSON object: the task ids
in the order listed, each page's size, and the count the first page gave.
"""

import json
import sys

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkiotdm.v5 import IoTDMClient, ListInstanceTasksRequest


def main():
    endpoint, project_id, ak, sk, instance_id = sys.argv[1:6]
    limit = int(sys.argv[6]) if len(sys.argv) > 6 else None
    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True
    client = (
        IoTDMClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoints([endpoint])
        .build()
    )
    ids, pages, count, marker = [], [], None, None
    while True:
        request = ListInstanceTasksRequest(instance_id=instance_id, limit=limit, marker=marker)
        response = client.list_instance_tasks(request)
        tasks = response.tasks or []
        pages.append(len(tasks))
        ids.extend(task.task_id for task in tasks)
        if count is None:
            count = response.page.count
        if not tasks or len(ids) >= count or not response.page.marker:
            break
        marker = response.page.marker
    print(json.dumps({"ids": ids, "pages": pages, "count": count}))


if __name__ == "__main__":
    main()
